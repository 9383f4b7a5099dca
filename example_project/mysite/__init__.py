"""The mmcache example site: Django settings, URLs and the WSGI entry point."""
