"""Tenant lifecycle in the control plane: onboarding, transitions, purge and moves.

Onboarding requests and their provisioning (onboarding, onboarding_rows, the Onboarding model),
status transitions and purge (lifecycle), the worker's tasks (provisioning, moves), the operator
tenant API (api, serializers) and TenantAdmin with every action it offers (admin). The tenancy
machinery itself (schemas, placements, resolution) lives in the `tenants` package.
"""
