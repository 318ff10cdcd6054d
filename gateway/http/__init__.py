"""The HTTP layer: the API's routes, the admin page, auth, limits and problem documents.

It only translates: a request into one of the gateway's actions (``gateway.service``), the
action's result or refusal into an answer.
"""
