"""The local OAuth 2.0 authorisation server: clients, codes with PKCE, rotating tokens."""
