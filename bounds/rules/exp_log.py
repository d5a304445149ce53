"""Placeholder module: rules are added by the work on this op family."""

RULES = ()
