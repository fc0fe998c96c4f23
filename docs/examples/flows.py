"""The order workflow of the Flask example: checked, parked until someone approves, confirmed.

`flask_app.py` starts and approves instances of it; `worker.py` runs them.
"""

from hephaestus import Done, Ok, Step, Unique, WaitForEvent, Workflow


class CheckOrder(Step):
    events = ("checked",)

    def execute(self, instance, config, context):
        return Ok("checked", {"item_count": len(context.initial["items"])})


class AwaitApproval(WaitForEvent):
    """Parks the order until `POST /orders/<order>/approve`; that request's JSON is its output."""


class ConfirmOrder(Step):
    events = ("confirmed",)

    def execute(self, instance, config, context):
        approval = context.steps["await_approval"]
        return Ok("confirmed", {"approved_by": approval["approver"]})


class OrderApproval(Workflow):
    unique = Unique(key="order")
    start = CheckOrder
    transitions = {
        (CheckOrder, "checked"): (AwaitApproval, {"event_name": "approved"}),
        (AwaitApproval, "approved"): ConfirmOrder,
        (ConfirmOrder, "confirmed"): Done,
    }
