"""Sending with respect: consent, reachability, channel choice, quiet hours, frequency caps,
rendering and the dispatch event. The send activity (workflows/activities/sending.py) runs
these in order; the rules are documented in docs/sending.md.
"""
