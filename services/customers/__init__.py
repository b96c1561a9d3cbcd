"""The customer service: the 360 view, the timeline and preference changes (`CustomerService`)."""
