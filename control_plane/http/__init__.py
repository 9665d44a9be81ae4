"""HTTP plumbing shared by every API: the problem+json exception handler, the JSON renderer, the
plain views (a tenant host's root, 404 and 500) and the Redis cache backend the request path reads.
"""
