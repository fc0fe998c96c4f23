"""A Flask app that starts, approves and shows orders through a `SyncClient` (client mode).

Run it next to a runner, both on the same storage, from this directory:

    export HEPHAESTUS_STORAGE=sqlite:///shop.db
    hephaestus worker --app worker:app     # executes the steps
    flask --app flask_app run              # serves the HTTP API

The web process never runs a step: it validates each call, writes, and answers.
"""

import os

from flask import Flask, request
from flows import OrderApproval

from hephaestus import (
    AlreadyRunningError,
    ContextSerializationError,
    HephaestusError,
    InstanceNotFoundError,
    InstanceNotWaitingError,
    InvalidBusinessKeyError,
    InvalidEventError,
)
from hephaestus.sync import SyncClient

# One client per process, shared by all request threads. It opens at its first
# call (after a forking server has forked) and closes itself when the process exits.
client = SyncClient(os.environ.get("HEPHAESTUS_STORAGE", "sqlite:///hephaestus.db"))

app = Flask(__name__)


@app.post("/orders")
def create_order():
    order = request.get_json()
    order_id = client.start(OrderApproval, order.pop("order"), order)
    return {"id": order_id}, 201


@app.post("/orders/<order>/approve")
def approve_order(order):
    order_id = client.business_id(OrderApproval, order)
    client.resume(order_id, "approved", data=request.get_json())
    return {"id": order_id}, 202


@app.get("/orders/<order>")
def show_order(order):
    instance = client.get(client.business_id(OrderApproval, order))
    return {
        "id": instance.id,
        "status": instance.status.value,
        "context": instance.context.to_dict(),
    }


# The client raises the runtime's own errors: each says what was wrong.
HTTP_STATUS = {
    InstanceNotFoundError: 404,
    AlreadyRunningError: 409,
    InstanceNotWaitingError: 409,
    InvalidEventError: 409,
    InvalidBusinessKeyError: 400,
    ContextSerializationError: 400,
}


@app.errorhandler(HephaestusError)
def workflow_error(error):
    status = next((code for kind, code in HTTP_STATUS.items() if isinstance(error, kind)), 500)
    return {"error": type(error).__name__, "message": str(error)}, status


@app.errorhandler(KeyError)
def missing_field(error):
    return {"error": "KeyError", "message": f"the JSON body needs {error}"}, 400
