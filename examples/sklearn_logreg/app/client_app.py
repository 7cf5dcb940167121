"""sklearn_logreg: the ClientApp (Flower's Message API)."""

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from app.task import fit, get_params, load_data, new_model, set_params
from app.task import test as test_fn

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Fit the received model on this node's records."""
    model = new_model(context.run_config["local-epochs"])
    set_params(model, {k: a.numpy() for k, a in msg.content["arrays"].items()})
    x, y, _, _ = load_data(context.node_config["partition-id"],
                           context.node_config["num-partitions"])  # fmt: skip
    train_loss = fit(model, x, y)
    metrics = {"train_loss": train_loss, "num-examples": len(y)}
    arrays = ArrayRecord({k: Array(v) for k, v in get_params(model).items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Test the received model on this node's held-out records."""
    model = new_model(context.run_config["local-epochs"])
    set_params(model, {k: a.numpy() for k, a in msg.content["arrays"].items()})
    _, _, x, y = load_data(context.node_config["partition-id"],
                           context.node_config["num-partitions"])  # fmt: skip
    loss, accuracy = test_fn(model, x, y)
    metrics = {"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(y)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
