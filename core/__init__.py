"""Everything in Slimscope that is not a widget. Never imports Qt, not even indirectly."""
