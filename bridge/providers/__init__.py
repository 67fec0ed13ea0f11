"""Vehicle providers: the car maker's side, over httpx, knowing nothing of MQTT."""
