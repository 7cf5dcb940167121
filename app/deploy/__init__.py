"""Real deployment: TLS material, SuperNode auth keys and a scripted local SuperLink/SuperNodes.

``certs`` writes a CA, the SuperLink's certificate and SuperNode key pairs;
``local`` starts a SuperLink and N SuperNodes on 127.0.0.1 with TLS, node
authentication and HE keys, runs the app and stops every process it started.
docs/deploy/index.md.
"""
