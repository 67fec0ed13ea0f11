"""The REST resource API under /api/v1, for apps holding an OAuth access token."""
