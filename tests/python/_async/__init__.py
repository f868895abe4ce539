"""The async sources of generated tests: scripts/gen-sync writes their sync
twins one folder up. Both run as tests."""
