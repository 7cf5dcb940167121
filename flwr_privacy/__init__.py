"""HE and DP core shared by the client mods (app/) and the server strategies (strategies/).

Imports neither ``app`` nor ``strategies``, and no torch: the server side stays light.
"""
