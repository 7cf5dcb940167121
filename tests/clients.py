"""The real ClientApp functions behind extra test mods (faulty or recording clients)."""

from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from app import client_app as apps


def clients_with(*mods: Mod) -> ClientApp:
    """The app's train/evaluate/describe handlers behind ``mods`` (outermost first), then
    the app's own HE and DP mods."""
    app = ClientApp(mods=[*mods, apps.secagg_mod, apps.he_mod, apps.local_dp_mod])
    app.train()(apps.train)
    app.evaluate()(apps.evaluate)
    app.query("describe")(apps.describe)
    return app
