"""``majordomo demo``: the real gateway, a simulated provider behind it (simulator.py) and a week of
planned traffic sent through it (traffic.py), so a newcomer sees reports and the dashboard filled
in without an API key or a network."""
