"""Connected apps: the app registry, broker enforcement (dynsec / acl-file / none) and alerts.

apps.py         AppRegistry: the one implementation of add/grant/withdraw/revoke (CLI, web)
values.py       what the registry hands out: AppChange, NewApp, AppDetails
table.py        the registry's SQLite tables
keeper.py       applies changes to the broker with retries; tracks what is pending
validation.py   ids, scopes, names and CIDRs checked before anything is written (pure)
grants.py       which topics an app may read and write, from its scopes (pure)
passwords.py    generated broker passwords and Mosquitto's `$7$` PBKDF2 hash
broker.py       the Enforcement protocol, the `none` mode and the factory
dynsec_plan.py  dynamic-security control commands as data (pure)
dynsec.py       dynamic-security enforcement, sending the plans through control.py
control.py      the paho admin client speaking `$CONTROL/dynamic-security/v1`
aclfile.py      renders a Mosquitto password_file and acl_file
sync.py         the daemon's loop: retries pending broker changes, sees other processes' edits
alerts.py       AlertHub: alert events on MQTT and to the webhook
webhook.py      the webhook sender (httpx; bounded queue, retries with backoff)
"""
