"""Identity: who calls the APIs and as what.

Users (Django's), memberships (a user's role in one tenant) and API tokens (models); token secrets
(tokens); bearer authentication (authentication), the principal cache it reads (principals) and the
signals that keep that cache true (principal_signals); the operator API's permission (permissions);
`/api/v1/me` (api); their admin.
"""
