"""The owner's web page ("Connected Apps"), the local OAuth 2.0 server and the REST API.

Import the parts from their modules (`bridge.web.app`, `bridge.web.server`): this package is
imported by the daemon before the page is ever asked for, and must not load the page for it;
the page itself loads FastAPI only for the REST API (`bridge.web.api.app`).
"""
