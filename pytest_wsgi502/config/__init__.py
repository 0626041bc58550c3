"""Configuration: option/env/ini resolution and matrix expansion. Pure: no processes, no I/O but file reads."""
