"""The ground floor: types, errors, the registry, typed specs and field
validators. Imports nothing of rtb's own outside ``benchmark.core``."""
