"""`ownerlink demo`: the whole product on one machine, on the built-in simulator."""
