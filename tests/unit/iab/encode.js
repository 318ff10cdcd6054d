// IAB's own TC string encoder (@iabtechlabtcf/core, found through NODE_PATH), for the gateway's
// golden test: reads a JSON list of consents on stdin, prints the list of encoded strings.
// Each is service-specific with no vendors, as the gateway builds them for Masivo; the Global
// Vendor List is a stand-in carrying only the version and policy version the string names.
const { TCModel, TCString, GVL } = require("@iabtechlabtcf/core");

const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const strings = cases.map((c) => {
  const gvl = new GVL({
    gvlSpecificationVersion: 3,
    vendorListVersion: c.vendor_list_version,
    tcfPolicyVersion: c.tcf_policy_version,
    lastUpdated: "2026-01-01T00:00:00Z",
    purposes: {}, specialPurposes: {}, features: {}, specialFeatures: {}, vendors: {}, stacks: {}, dataCategories: {},
  });
  const model = new TCModel(gvl);
  model.cmpId = c.cmp_id;
  model.cmpVersion = c.cmp_version;
  model.consentScreen = 0;
  model.isServiceSpecific = true;
  model.publisherCountryCode = c.publisher_cc;
  model.purposeConsents.set(c.purposes);
  model.created = new Date(c.created);
  model.lastUpdated = new Date(c.created);
  return TCString.encode(model);
});
process.stdout.write(JSON.stringify(strings));
