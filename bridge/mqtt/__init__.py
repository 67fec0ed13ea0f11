"""MQTT: the thin paho adapter, the topic contract, discovery (pure) and the diffing publisher."""
