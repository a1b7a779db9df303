"""LM4LV example scripts and the `lm4lv` command line."""
