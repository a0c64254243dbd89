"""The job engine: one lifecycle for every kind of Horde job (`engine`), its poller, shared adapter parts."""
