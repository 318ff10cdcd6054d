"""Provider simulators: Starlette apps that behave like Masivo, Wix and Intempt's documented APIs.

They are the test oracle, so they read the provider docs on their own and import nothing from `schemas/`
or the adapters. Control routes (`/_inspect`, `/_faults`, `/_reset`) are described in `common`. All
installed providers' simulators on one app: ``adapters.registry.simulators_app``.
"""

from __future__ import annotations

from adapters.simulators.common import Faults

__all__ = ["Faults"]
