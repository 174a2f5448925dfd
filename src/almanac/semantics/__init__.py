"""What the rules mean, engine-neutral: time (rule 1), batch validation, windows and tiles.

Every engine and store renders these rules; none restates them. See docs/concepts.md.
"""
