"""The owner's pages: login, Connected Apps, Vehicles, Audit, Security."""
