"""The local target: the whole lab on one Linux host (namespaces, bridges, nspawn)."""
