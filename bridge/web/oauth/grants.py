"""Whether a grant has ended with the scopes withdrawn from its app: reads of the app registry.

Kept apart from the validator, which is oauthlib's: the owner page counts an app's live grants
with it, and must not load oauthlib for that (`bridge.web.oauth.server`).
"""

from __future__ import annotations

from bridge.web.oauth.store import Token
from bridge.web.ports import Registry


def lost_all(registry: Registry, client_id: str, scopes: str, mark: int) -> bool:
    """True when the app held none of `scopes` at some moment since `mark`, now included.
    Disabling is a pause, not a withdrawal (client authentication refuses it meanwhile),
    and a revoked app's tokens die with its client, so neither counts here."""
    app = registry.get(client_id)
    moments = [*registry.scopes_since(client_id, mark), *([app.scopes] if app else [])]
    carried = set(scopes.split())
    return any(not carried & {scope.value for scope in held} for held in moments)


def ended(registry: Registry, stored: Token) -> bool:
    """True when every scope `stored` carries has been withdrawn from the app at some moment
    since it was issued, given back since or not (the owner must consent again)."""
    return lost_all(registry, stored.client_id, stored.scopes, stored.scope_mark)
