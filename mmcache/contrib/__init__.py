"""Integrations of mmcache with frameworks (``mmcache.contrib.django``)."""
