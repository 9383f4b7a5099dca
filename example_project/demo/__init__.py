"""The example app: an expensive view cached by mmcache, shared by every worker."""
