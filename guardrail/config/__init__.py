"""Configuration: settings from flags, file and environment; routes; the policy sets in service.

Read once at start-up and validated as read (errors name the key and where the value came from).
Depends on ``policy``, ``formats``, ``guard`` and ``observe``; nothing below imports it.
"""
