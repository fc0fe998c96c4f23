"""Definition-time validation: a broken workflow class fails when it is created.

Every rule raises its own `WorkflowDefinitionError` subclass, and the message
names the workflow, the steps and the events at fault.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import textwrap
from pathlib import Path

import pytest

from hephaestus import (
    Context,
    CycleError,
    Done,
    DuplicateStepKeyError,
    EventNotDeclaredError,
    InvalidRouteError,
    InvalidStartError,
    InvalidStepError,
    InvalidTransitionError,
    InvalidUniqueError,
    InvalidVersionsError,
    LeafNotDoneError,
    MissingTransitionError,
    Step,
    UnconvergedFanOutError,
    Unique,
    UnreachableStepError,
    Wait,
    WaitForEvent,
    Workflow,
    WorkflowDefinitionError,
    route,
)
from hephaestus.core.definition import load_workflow, resolve_version, workflow_name

UNIQUE = Unique(key="orderid", scope="workflow")


# -- steps shared by the tests -------------------------------------------------------------


class ValidateOrder(Step):
    events = ("valid", "invalid")


class ChargePayment(Step):
    events = ("charged",)


class ReserveStock(Step):
    events = ("reserved",)


class Ship(Step):
    events = ("shipped",)


class RejectOrder(Step):
    events = ("rejected",)


class First(Step):
    events = ("ok",)


class Second(Step):
    events = ("ok",)


class Third(Step):
    events = ("ok",)


class Fourth(Step):
    events = ("ok",)


class Merge(Step):
    events = ("ok",)


class FinalMerge(Step):
    events = ("ok",)


class Review(Step):
    events = ("approved", "rejected")


class Triage(Step):
    events = ("routed",)


class FastTrack(Step):
    events = ("ok",)


class Standard(Step):
    events = ("ok",)


# -- the order workflow of the design document ---------------------------------------------


class OrderFlow(Workflow):
    unique = Unique(key="orderid", scope="workflow")
    version = 1
    tags = ("orders",)
    start = ValidateOrder
    transitions = {
        (ValidateOrder, "valid"): [ChargePayment, ReserveStock],
        (ValidateOrder, "invalid"): RejectOrder,
        (ChargePayment, "charged"): Ship,
        (ReserveStock, "reserved"): Ship,
        (Ship, "shipped"): (Wait, {"duration": 2, "unit": "day"}),
        (Wait, "timeout"): Done,
        (RejectOrder, "rejected"): Done,
    }


class TestOrderExample:
    def test_start_is_both_the_facade_and_the_first_step(self) -> None:
        assert callable(OrderFlow.start)
        assert OrderFlow.definition().start == "validate_order"

    def test_definition_describes_the_graph(self) -> None:
        definition = OrderFlow.definition()
        assert definition.name == workflow_name(OrderFlow)
        assert definition.version == 1
        assert definition.unique == Unique(key="orderid", scope="workflow")
        assert definition.tags == ("orders",)
        assert set(definition.nodes) == {
            "validate_order",
            "charge_payment",
            "reserve_stock",
            "ship",
            "reject_order",
            "wait",
            "done",
        }
        assert definition.joins == {"ship", "done"}
        assert definition.edges[("validate_order", "valid")] == (
            "charge_payment",
            "reserve_stock",
        )
        assert definition.edges[("validate_order", "invalid")] == ("reject_order",)
        assert definition.edges[("ship", "shipped")] == ("wait",)
        assert definition.predecessors["ship"] == {"charge_payment", "reserve_stock"}
        assert definition.nodes["wait"].config == {"duration": 2, "unit": "day"}
        assert definition.nodes["validate_order"].events == ("valid", "invalid")
        assert definition.key_of(Ship) == "ship"
        assert definition.key_of(First) is None

    def test_order_is_topological(self) -> None:
        definition = OrderFlow.definition()
        position = {key: index for index, key in enumerate(definition.order)}
        assert set(position) == set(definition.nodes)
        for source, targets in definition.successors.items():
            for target in targets:
                assert position[source] < position[target], (source, target)

    def test_definition_is_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            OrderFlow.definition().start = "ship"  # type: ignore[misc]


# -- rule: acyclic --------------------------------------------------------------------------


class TestCycle:
    def test_cycle_names_the_path(self) -> None:
        class Loop(Step):
            events = ("again", "ok")

        with pytest.raises(CycleError, match=r"cycle: Second -> Loop -> Second"):

            class Cyclic(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): Second,
                    (Second, "ok"): Loop,
                    (Loop, "again"): Second,
                    (Loop, "ok"): Done,
                }

    def test_self_loop(self) -> None:
        class Poll(Step):
            events = ("again", "ok")

        with pytest.raises(CycleError, match=r"SelfLoop has a cycle: Poll -> Poll"):

            class SelfLoop(Workflow):
                unique = UNIQUE
                start = Poll
                transitions = {(Poll, "again"): Poll, (Poll, "ok"): Done}


# -- rule: reachable ------------------------------------------------------------------------


class TestReachability:
    def test_unreachable_step_is_named(self) -> None:
        class Orphan(Step):
            events = ("ok",)

        with pytest.raises(
            UnreachableStepError, match=r"Orphan cannot be reached from start \(First\)"
        ):

            class WithOrphan(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Done, (Orphan, "ok"): Done}

    def test_route_targets_count_as_reachable(self) -> None:
        class Routed(Workflow):
            unique = UNIQUE
            start = Triage
            transitions = {(FastTrack, "ok"): Done, (Standard, "ok"): Done}

            @route(Triage, "routed", targets=[FastTrack, Standard])
            def triage(context):
                return FastTrack

        assert set(Routed.definition().nodes) == {"triage", "fast_track", "standard", "done"}


# -- rule: every path ends at Done ----------------------------------------------------------


class TestLeaves:
    def test_leaf_that_is_not_done(self) -> None:
        with pytest.raises(
            LeafNotDoneError,
            match=r"path through Second ends there.*\(Second, 'ok'\): Done",
        ):

            class DeadEnd(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Second}

    def test_step_without_events_cannot_be_a_leaf(self) -> None:
        class Silent(Step):
            pass

        with pytest.raises(InvalidStepError, match=r"step .*Silent declares no events"):

            class Quiet(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Silent}

    def test_a_workflow_of_only_done_is_valid(self) -> None:
        class Trivial(Workflow):
            unique = UNIQUE
            start = Done

        assert Trivial.definition().start == "done"


# -- rule: fan-outs converge before Done ----------------------------------------------------


class TestFanOutConvergence:
    def test_branches_that_meet_only_at_done(self) -> None:
        with pytest.raises(
            UnconvergedFanOutError,
            match=r"fan-out \(First, 'ok'\) -> \[Second, Third\] never converges before Done",
        ):

            class Split(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): [Second, Third],
                    (Second, "ok"): Done,
                    (Third, "ok"): Done,
                }

    def test_fan_out_straight_into_done(self) -> None:
        with pytest.raises(UnconvergedFanOutError, match=r"\[Second, Done\]"):

            class HalfDone(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): [Second, Done],
                    (Second, "ok"): Done,
                }

    def test_branch_that_can_skip_the_join(self) -> None:
        # Review's rejection goes to Done while Second is still running: no common join.
        with pytest.raises(UnconvergedFanOutError, match=r"\[Review, Second\]"):

            class Leaky(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): [Review, Second],
                    (Review, "approved"): Merge,
                    (Review, "rejected"): Done,
                    (Second, "ok"): Merge,
                    (Merge, "ok"): Done,
                }

    def test_converging_fan_out_passes(self) -> None:
        class Joined(Workflow):
            unique = UNIQUE
            start = First
            transitions = {
                (First, "ok"): [Second, Third],
                (Second, "ok"): Merge,
                (Third, "ok"): Merge,
                (Merge, "ok"): Done,
            }

        assert Joined.definition().joins == {"merge"}

    def test_nested_fan_out_that_converges_passes(self) -> None:
        class Nested(Workflow):
            unique = UNIQUE
            start = First
            transitions = {
                (First, "ok"): [Second, Third],
                (Second, "ok"): [Fourth, Review],
                (Fourth, "ok"): Merge,
                (Review, "approved"): Merge,
                (Review, "rejected"): Merge,
                (Merge, "ok"): FinalMerge,
                (Third, "ok"): FinalMerge,
                (FinalMerge, "ok"): Done,
            }

        definition = Nested.definition()
        assert definition.edges[("second", "ok")] == ("fourth", "review")
        assert definition.joins == {"merge", "final_merge"}

    def test_exclusive_branches_may_go_straight_to_done(self) -> None:
        class Exclusive(Workflow):
            unique = UNIQUE
            start = Review
            transitions = {
                (Review, "approved"): First,
                (Review, "rejected"): Second,
                (First, "ok"): Done,
                (Second, "ok"): Done,
            }

        assert Exclusive.definition().joins == {"done"}


# -- rule: one context key per step ---------------------------------------------------------


class TestDuplicateKeys:
    def test_two_classes_with_the_same_key(self) -> None:
        class CardCharge(Step):
            key = "charge"
            events = ("ok",)

        class WireCharge(Step):
            key = "charge"
            events = ("ok",)

        with pytest.raises(
            DuplicateStepKeyError,
            match=r"CardCharge and .*WireCharge share the context key 'charge'",
        ):

            class TwoCharges(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): CardCharge,
                    (CardCharge, "ok"): WireCharge,
                    (WireCharge, "ok"): Done,
                }

    def test_two_classes_with_the_same_name(self) -> None:
        def make_step() -> type[Step]:
            class Notify(Step):
                events = ("ok",)

            return Notify

        email, sms = make_step(), make_step()
        with pytest.raises(DuplicateStepKeyError, match=r"share the context key 'notify'"):

            class Notifications(Workflow):
                unique = UNIQUE
                start = email
                transitions = {(email, "ok"): sms, (sms, "ok"): Done}


# -- rule: events used and declared ---------------------------------------------------------


class TestEvents:
    def test_transition_on_an_undeclared_event(self) -> None:
        with pytest.raises(
            EventNotDeclaredError,
            match=re.escape(
                "the transition (First, 'failed') uses an event that First does not declare; "
                "its events are ['ok']"
            ),
        ):

            class Typo(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Done, (First, "failed"): Done}

    def test_route_on_an_undeclared_event(self) -> None:
        with pytest.raises(EventNotDeclaredError, match=r"\(Triage, 'sorted'\)"):

            class BadRoute(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {
                    (Triage, "routed"): FastTrack,
                    (FastTrack, "ok"): Done,
                    (Standard, "ok"): Done,
                }

                @route(Triage, "sorted", targets=[FastTrack, Standard])
                def triage(context):
                    return Standard

    def test_declared_event_without_transition(self) -> None:
        with pytest.raises(
            MissingTransitionError,
            match=re.escape("step Review declares event(s) ['rejected'] without a transition"),
        ):

            class HalfReviewed(Workflow):
                unique = UNIQUE
                start = Review
                transitions = {(Review, "approved"): Done}


# -- rule: unique ---------------------------------------------------------------------------


class TestUnique:
    def test_missing_unique_is_refused_at_start_not_at_import(self) -> None:
        class NoKey(Workflow):
            start = First
            transitions = {(First, "ok"): Done}

        assert NoKey.definition().unique is None
        with pytest.raises(
            InvalidUniqueError, match=r"workflow .*NoKey has no `unique` and no umbrella"
        ):
            resolve_version(NoKey)

    def test_unique_that_is_not_a_unique(self) -> None:
        with pytest.raises(InvalidUniqueError, match=r"unique must be a Unique.*'orderid'"):

            class StringKey(Workflow):
                unique = "orderid"
                start = First
                transitions = {(First, "ok"): Done}

    @pytest.mark.parametrize("key", ["OrderId", "order-id", "order id", "", "orderid\n"])
    def test_malformed_unique_key(self, key: str) -> None:
        with pytest.raises(InvalidUniqueError, match=r"Unique key .* is malformed"):
            Unique(key=key)

    def test_unknown_scope(self) -> None:
        with pytest.raises(InvalidUniqueError, match=r"scope 'tenant' is not one of workflow"):
            Unique(key="orderid", scope="tenant")  # type: ignore[arg-type]

    def test_unique_is_inherited_from_an_abstract_base(self) -> None:
        class Orders(Workflow):
            unique = Unique(key="orderid", scope="global")
            tags = ("orders", "shop")

        class Refund(Orders):
            start = First
            transitions = {(First, "ok"): Done}

        assert Refund.definition().unique.scope == "global"
        assert Refund.definition().tags == ("orders", "shop")


# -- rule: start ----------------------------------------------------------------------------


class TestStart:
    def test_missing_start(self) -> None:
        with pytest.raises(InvalidStartError, match=r"workflow .*Headless has no `start`"):

            class Headless(Workflow):
                unique = UNIQUE
                transitions = {(First, "ok"): Done}

    @pytest.mark.parametrize(
        "start",
        [
            "First",
            First(),
            int,
            (First,),
            (First, "config"),
            (First, {"a": 1}, "extra"),
            ({"a": 1}, First),
        ],
        ids=["str", "step-instance", "non-step-class", "1-tuple", "str-config", "3-tuple", "swap"],
    )
    def test_start_that_is_not_a_step(self, start: object) -> None:
        with pytest.raises(
            InvalidStartError,
            match=r"Misstarted: start: expected a Step class or a \(Step, config dict\) pair",
        ):
            type(
                "Misstarted",
                (Workflow,),
                {"unique": UNIQUE, "start": start, "transitions": {(First, "ok"): Done}},
            )

    def test_start_with_config(self) -> None:
        class Approval(WaitForEvent):
            pass

        class Approve(Workflow):
            unique = UNIQUE
            start = (Approval, {"event_name": "approved"})
            transitions = {(Approval, "approved"): Done}

        definition = Approve.definition()
        assert definition.start == "approval"
        assert definition.nodes["approval"].config == {"event_name": "approved"}
        assert callable(Approve.start)


# -- rule: transition shapes ----------------------------------------------------------------


class TestTransitionShapes:
    def test_transitions_must_be_a_dict(self) -> None:
        with pytest.raises(InvalidTransitionError, match=r"transitions must be a dict"):

            class Listed(Workflow):
                unique = UNIQUE
                start = First
                transitions = [((First, "ok"), Done)]

    @pytest.mark.parametrize(
        "key", [First, "First", (First,), (First, "ok", "extra"), ("First", "ok"), (First, 1)]
    )
    def test_malformed_transition_key(self, key: object) -> None:
        with pytest.raises(InvalidTransitionError, match=r"must be a \(StepClass, 'event'\) pair"):
            type(
                "BadKey",
                (Workflow,),
                {"unique": UNIQUE, "start": First, "transitions": {key: Done}},
            )

    @pytest.mark.parametrize("target", ["Done", None, 42, (Done,), [Done, "Second"]])
    def test_malformed_target(self, target: object) -> None:
        with pytest.raises(
            InvalidTransitionError,
            match=r"transition \(First, 'ok'\): expected a Step class or a \(Step, config dict\)",
        ):
            type(
                "BadTarget",
                (Workflow,),
                {"unique": UNIQUE, "start": First, "transitions": {(First, "ok"): target}},
            )

    def test_empty_target_list(self) -> None:
        with pytest.raises(
            InvalidTransitionError, match=r"transition \(First, 'ok'\) has an empty list of targets"
        ):

            class Nowhere(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): []}

    def test_fan_out_listing_a_target_twice(self) -> None:
        with pytest.raises(
            InvalidTransitionError, match=r"transition \(First, 'ok'\) lists Second twice"
        ):

            class Doubled(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): [Second, Second],
                    (Second, "ok"): Done,
                }

    def test_done_cannot_have_transitions(self) -> None:
        with pytest.raises(
            InvalidTransitionError, match=r"Done is terminal and cannot have transitions"
        ):

            class AfterDone(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Done, (Done, "done"): Second, (Second, "ok"): Done}

    def test_conflicting_configs_for_one_step(self) -> None:
        with pytest.raises(
            InvalidTransitionError,
            match=r"gives step Wait the config \{'duration': 5.*already has \{'duration': 1",
        ):

            class TwoWaits(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): (Wait, {"duration": 1, "unit": "hour"}),
                    (Wait, "timeout"): Second,
                    (Second, "ok"): (Wait, {"duration": 5, "unit": "hour"}),
                }

    def test_same_config_twice_is_one_step(self) -> None:
        class Rejoin(Workflow):
            unique = UNIQUE
            start = Review
            transitions = {
                (Review, "approved"): (Wait, {"duration": 1, "unit": "hour"}),
                (Review, "rejected"): (Wait, {"duration": 1, "unit": "hour"}),
                (Wait, "timeout"): Done,
            }

        assert Rejoin.definition().nodes["wait"].config == {"duration": 1, "unit": "hour"}

    def test_configs_are_stored_as_json(self) -> None:
        class Tagger(Step):
            events = ("ok",)

        class Tagged(Workflow):
            unique = UNIQUE
            start = (Tagger, {"tags": ("a", "b"), "limits": {"max": 3}})
            transitions = {(Tagger, "ok"): Done}

        assert Tagged.definition().nodes["tagger"].config == {
            "tags": ["a", "b"],
            "limits": {"max": 3},
        }

    def test_config_that_is_not_json(self) -> None:
        class Tagger(Step):
            events = ("ok",)

        with pytest.raises(
            InvalidTransitionError, match=r"the config of Tagger\['tags'\] \(a set\)"
        ):

            class Unstorable(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): (Tagger, {"tags": {"a"}}), (Tagger, "ok"): Done}


# -- rule: dynamic routes -------------------------------------------------------------------


class TestRoutes:
    def test_route_is_part_of_the_definition(self) -> None:
        class Routed(Workflow):
            unique = UNIQUE
            start = Triage
            transitions = {(FastTrack, "ok"): Done, (Standard, "ok"): Done}

            @route(Triage, "routed", targets=[FastTrack, Standard])
            def triage(context):
                return FastTrack if context.initial["priority"] == "high" else Standard

        spec = Routed.definition().routes[("triage", "routed")]
        assert spec.targets == ("fast_track", "standard")
        assert spec.function_name == "triage"
        assert spec.choose(Context.new({"priority": "high"})) is FastTrack
        assert spec.choose(Context.new({"priority": "low"})) is Standard
        assert Routed.definition().successors["triage"] == ("fast_track", "standard")

    @pytest.mark.parametrize("targets", [[], (), "FastTrack", None])
    def test_route_without_targets(self, targets: object) -> None:
        with pytest.raises(
            InvalidRouteError,
            match=r"@route triage: declare every step the route may return",
        ):

            class Untargeted(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {(FastTrack, "ok"): Done}

                @route(Triage, "routed", targets=targets)  # type: ignore[arg-type]
                def triage(context):
                    return FastTrack

    def test_route_step_must_be_a_step_class(self) -> None:
        with pytest.raises(InvalidRouteError, match=r"the route's step must be a Step class"):

            class NotAStep(Workflow):
                unique = UNIQUE
                start = First
                transitions = {(First, "ok"): Done}

                @route("Triage", "routed", targets=[FastTrack])  # type: ignore[arg-type]
                def triage(context):
                    return FastTrack

    def test_route_event_must_be_a_str(self) -> None:
        with pytest.raises(InvalidRouteError, match=r"the route's event must be a str, got 1"):

            class NumericEvent(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {(FastTrack, "ok"): Done}

                @route(Triage, 1, targets=[FastTrack])  # type: ignore[arg-type]
                def triage(context):
                    return FastTrack

    def test_route_target_must_be_a_step(self) -> None:
        with pytest.raises(
            InvalidRouteError,
            match=r"@route triage: expected a Step class or a \(Step, config dict\) pair, "
            r"got 'FastTrack'",
        ):

            class StringTarget(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {(FastTrack, "ok"): Done}

                @route(Triage, "routed", targets=["FastTrack"])
                def triage(context):
                    return FastTrack

    def test_route_listing_a_target_twice(self) -> None:
        with pytest.raises(InvalidRouteError, match=r"lists FastTrack twice"):

            class TwiceRouted(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {(FastTrack, "ok"): Done}

                @route(Triage, "routed", targets=[FastTrack, FastTrack])
                def triage(context):
                    return FastTrack

    def test_route_clashing_with_a_transition(self) -> None:
        with pytest.raises(
            InvalidRouteError, match=r"\(Triage, 'routed'\) already has a transition"
        ):

            class Clash(Workflow):
                unique = UNIQUE
                start = Triage
                transitions = {
                    (Triage, "routed"): FastTrack,
                    (FastTrack, "ok"): Done,
                    (Standard, "ok"): Done,
                }

                @route(Triage, "routed", targets=[FastTrack, Standard])
                def triage(context):
                    return Standard

    def test_route_to_a_configured_target(self) -> None:
        class Delayed(Workflow):
            unique = UNIQUE
            start = Triage
            transitions = {(FastTrack, "ok"): Done, (Wait, "timeout"): Done}

            @route(Triage, "routed", targets=[FastTrack, (Wait, {"duration": 1, "unit": "day"})])
            def triage(context):
                return Wait

        definition = Delayed.definition()
        assert definition.routes[("triage", "routed")].targets == ("fast_track", "wait")
        assert definition.nodes["wait"].config == {"duration": 1, "unit": "day"}


# -- built-in steps' configs ----------------------------------------------------------------


class TestWaitConfig:
    @pytest.mark.parametrize(
        ("config", "problem"),
        [
            (None, r"Wait needs a config"),
            ({"unit": "day"}, r"duration must be a finite number >= 0, got None"),
            ({"duration": -1}, r"got -1"),
            ({"duration": "2"}, r"got '2'"),
            ({"duration": 2, "unit": "fortnight"}, r"unit must be one of .*got 'fortnight'"),
        ],
    )
    def test_bad_wait_config(self, config: dict[str, object] | None, problem: str) -> None:
        target: object = Wait if config is None else (Wait, config)
        with pytest.raises(
            InvalidTransitionError, match=rf"config .* of step Wait is invalid: .*{problem}"
        ):
            type(
                "BadWait",
                (Workflow,),
                {
                    "unique": UNIQUE,
                    "start": First,
                    "transitions": {(First, "ok"): target, (Wait, "timeout"): Done},
                },
            )

    def test_infinite_wait_is_not_storable(self) -> None:
        with pytest.raises(InvalidTransitionError, match=r"the config of Wait\['duration'\]"):

            class Forever(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): (Wait, {"duration": float("inf")}),
                    (Wait, "timeout"): Done,
                }


class TestWaitForEventConfig:
    def test_declares_the_configured_event(self) -> None:
        class Approval(Workflow):
            unique = UNIQUE
            start = First
            transitions = {
                (First, "ok"): (WaitForEvent, {"event_name": "approved"}),
                (WaitForEvent, "approved"): Done,
            }

        assert Approval.definition().nodes["wait_for_event"].events == ("approved",)

    def test_timeout_adds_a_timeout_event_that_needs_a_transition(self) -> None:
        with pytest.raises(
            MissingTransitionError, match=re.escape("WaitForEvent declares event(s) ['timeout']")
        ):

            class NoTimeoutPath(Workflow):
                unique = UNIQUE
                start = First
                transitions = {
                    (First, "ok"): (WaitForEvent, {"event_name": "approved", "timeout_ms": 500}),
                    (WaitForEvent, "approved"): Done,
                }

        class WithTimeout(Workflow):
            unique = UNIQUE
            start = First
            transitions = {
                (First, "ok"): (WaitForEvent, {"event_name": "approved", "timeout_ms": 500}),
                (WaitForEvent, "approved"): Second,
                (WaitForEvent, "timeout"): Second,
                (Second, "ok"): Done,
            }

        assert WithTimeout.definition().nodes["wait_for_event"].events == ("approved", "timeout")

    def test_transition_on_another_event(self) -> None:
        with pytest.raises(EventNotDeclaredError, match=r"\(WaitForEvent, 'paid'\)"):

            class WrongEvent(Workflow):
                unique = UNIQUE
                start = (WaitForEvent, {"event_name": "approved"})
                transitions = {(WaitForEvent, "approved"): Done, (WaitForEvent, "paid"): Done}

    @pytest.mark.parametrize(
        ("config", "problem"),
        [
            (None, r"WaitForEvent needs a config"),
            ({"timeout_ms": 100}, r"WaitForEvent needs a config"),
            ({"event_name": 5}, r"WaitForEvent needs a config"),
            ({"event_name": "payment confirmed"}, r"'payment confirmed' is not a valid event name"),
            ({"event_name": "ok", "timeout_ms": -1}, r"timeout_ms must be .* got -1"),
            ({"event_name": "ok", "timeout_ms": "5s"}, r"timeout_ms must be .* got '5s'"),
            ({"event_name": "timeout", "timeout_ms": 10}, r"'timeout' clashes with the event"),
        ],
    )
    def test_bad_config(self, config: dict[str, object] | None, problem: str) -> None:
        target: object = WaitForEvent if config is None else (WaitForEvent, config)
        with pytest.raises(InvalidTransitionError, match=r"step WaitForEvent is invalid"):
            type(
                "BadWaitForEvent",
                (Workflow,),
                {"unique": UNIQUE, "start": First, "transitions": {(First, "ok"): target}},
            )
        with pytest.raises(ValueError, match=problem):
            WaitForEvent.validate_config(config)

    def test_two_waits_in_one_workflow_use_subclasses(self) -> None:
        class AwaitPayment(WaitForEvent):
            pass

        class AwaitShipping(WaitForEvent):
            pass

        class TwoWaits(Workflow):
            unique = UNIQUE
            start = (AwaitPayment, {"event_name": "paid"})
            transitions = {
                (AwaitPayment, "paid"): (AwaitShipping, {"event_name": "shipped"}),
                (AwaitShipping, "shipped"): Done,
            }

        nodes = TwoWaits.definition().nodes
        assert nodes["await_payment"].events == ("paid",)
        assert nodes["await_shipping"].events == ("shipped",)


# -- versions and umbrellas -----------------------------------------------------------------


class OrderV1(Workflow):
    unique = UNIQUE
    version = 1
    start = First
    transitions = {(First, "ok"): Done}


class OrderV2(OrderV1):
    version = 2
    transitions = {(First, "ok"): Second, (Second, "ok"): Done}


class Orders(Workflow):
    unique = UNIQUE
    versions = {1: OrderV1, 2: OrderV2}
    current = 2


class GradualOrders(Workflow):
    unique = UNIQUE
    versions = {1: OrderV1, 2: OrderV2}
    current = 1

    @classmethod
    def version_for(cls, versions, opts):
        return 2 if opts.get("beta") else cls.current


class TestVersions:
    @pytest.mark.parametrize("version", [0, -1, "2", True, 1.0])
    def test_version_must_be_a_positive_int(self, version: object) -> None:
        with pytest.raises(InvalidVersionsError, match=r"version must be an int >= 1, got"):
            type(
                "BadVersion",
                (Workflow,),
                {
                    "unique": UNIQUE,
                    "version": version,
                    "start": First,
                    "transitions": {(First, "ok"): Done},
                },
            )

    def test_subclass_overrides_transitions(self) -> None:
        v1, v2 = OrderV1.definition(), OrderV2.definition()
        assert v1.version == 1
        assert v2.version == 2
        assert v2.start == "first"
        assert set(v1.nodes) == {"first", "done"}
        assert set(v2.nodes) == {"first", "second", "done"}
        assert callable(OrderV2.start)

    def test_umbrella_has_no_definition_of_its_own(self) -> None:
        assert Orders.is_umbrella()
        assert not OrderV1.is_umbrella()
        with pytest.raises(WorkflowDefinitionError, match=r"Orders is an umbrella"):
            Orders.definition()

    def test_resolve_version(self) -> None:
        assert resolve_version(Orders) is OrderV2
        assert resolve_version(Orders, 1) is OrderV1
        assert resolve_version(Orders, 2) is OrderV2
        assert resolve_version(OrderV1) is OrderV1
        assert resolve_version(OrderV1, 1) is OrderV1

    def test_version_for_override(self) -> None:
        assert resolve_version(GradualOrders) is OrderV1
        assert resolve_version(GradualOrders, opts={"beta": True}) is OrderV2
        # An explicit version wins over version_for.
        assert resolve_version(GradualOrders, 1, opts={"beta": True}) is OrderV1

    def test_unknown_version(self) -> None:
        with pytest.raises(
            InvalidVersionsError, match=re.escape("has no version 3; known versions: [1, 2]")
        ):
            resolve_version(Orders, 3)
        with pytest.raises(InvalidVersionsError, match=r"OrderV1 has version 1, not 2"):
            resolve_version(OrderV1, 2)

    def test_version_for_returning_an_unknown_version(self) -> None:
        class Broken(Workflow):
            unique = UNIQUE
            versions = {1: OrderV1}
            current = 1

            @classmethod
            def version_for(cls, versions, opts):
                return 7

        with pytest.raises(InvalidVersionsError, match=r"Broken has no version 7"):
            resolve_version(Broken)


class TestUmbrellaRules:
    def test_umbrella_needs_unique(self) -> None:
        with pytest.raises(InvalidUniqueError, match=r"umbrella workflow .*Keyless must declare"):

            class Keyless(Workflow):
                versions = {1: OrderV1}
                current = 1

    def test_current_not_in_versions(self) -> None:
        with pytest.raises(
            InvalidVersionsError, match=re.escape("current = 3 is not one of the versions [1, 2]")
        ):

            class Ahead(Workflow):
                unique = UNIQUE
                versions = {1: OrderV1, 2: OrderV2}
                current = 3

    def test_missing_current(self) -> None:
        with pytest.raises(InvalidVersionsError, match=r"current = None is not one of"):

            class NoCurrent(Workflow):
                unique = UNIQUE
                versions = {1: OrderV1}

    def test_version_number_must_match_the_class(self) -> None:
        with pytest.raises(
            InvalidVersionsError,
            match=r"versions\[1\] = OrderV2 declares version = 2; make them match",
        ):

            class Swapped(Workflow):
                unique = UNIQUE
                versions = {1: OrderV2}
                current = 1

    def test_version_must_be_concrete(self) -> None:
        class AbstractOrders(Workflow):
            unique = UNIQUE

        with pytest.raises(
            InvalidVersionsError,
            match=r"versions\[1\] = .*AbstractOrders is not a concrete workflow",
        ):

            class Hollow(Workflow):
                unique = UNIQUE
                versions = {1: AbstractOrders}
                current = 1

    @pytest.mark.parametrize(
        ("versions", "problem"),
        [
            ({1: "OrderV1"}, r"versions\[1\] must be a workflow class"),
            ({1: First}, r"versions\[1\] must be a workflow class"),
            ({0: OrderV1}, r"version numbers must be ints >= 1, got 0"),
            ({"1": OrderV1}, r"version numbers must be ints >= 1, got '1'"),
        ],
    )
    def test_malformed_versions(self, versions: dict[object, object], problem: str) -> None:
        with pytest.raises(InvalidVersionsError, match=problem):
            type("Malformed", (Workflow,), {"unique": UNIQUE, "versions": versions, "current": 1})

    def test_umbrella_with_its_own_graph(self) -> None:
        with pytest.raises(
            InvalidVersionsError, match=r"declares versions and also start/transitions"
        ):

            class Mixed(Workflow):
                unique = UNIQUE
                versions = {1: OrderV1}
                current = 1
                start = First


class TestAbstractBases:
    def test_base_without_graph_is_allowed(self) -> None:
        class Base(Workflow):
            unique = UNIQUE
            tags = ("shared",)

        with pytest.raises(WorkflowDefinitionError, match=r"Base is an abstract base"):
            Base.definition()

        class Concrete(Base):
            start = First
            transitions = {(First, "ok"): Done}

        assert Concrete.definition().tags == ("shared",)
        assert Concrete.definition().unique == UNIQUE

    def test_base_without_unique_is_allowed(self) -> None:
        class Tagged(Workflow):
            tags = ("x",)

        assert Tagged.__definition__ is None


# -- finding workflows by name --------------------------------------------------------------


class TestLoadWorkflow:
    def test_by_registered_name(self) -> None:
        assert load_workflow(workflow_name(OrderFlow)) is OrderFlow
        assert load_workflow(workflow_name(Orders)) is Orders

    def test_finds_a_nested_class_once_its_module_is_imported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        module = "shipping_flows_for_load_test"
        (tmp_path / f"{module}.py").write_text(
            textwrap.dedent(
                """
                from hephaestus import Done, Step, Unique, Workflow

                class Pack(Step):
                    events = ("packed",)

                class Shipping:
                    class Flow(Workflow):
                        unique = Unique(key="shipment")
                        start = Pack
                        transitions = {(Pack, "packed"): Done}
                """
            )
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        try:
            with pytest.raises(WorkflowDefinitionError, match=r"is not registered"):
                load_workflow(f"{module}.Shipping.Flow")  # not imported yet: not known
            assert module not in sys.modules
            importlib.import_module(module)  # what the application does
            flow = load_workflow(f"{module}.Shipping.Flow")
            assert flow.__qualname__ == "Shipping.Flow"
            assert flow.definition().start == "pack"
            with pytest.raises(WorkflowDefinitionError, match=r"is not registered"):
                load_workflow(f"{module}.Pack")
            with pytest.raises(WorkflowDefinitionError, match=r"is not registered"):
                load_workflow(f"{module}.Shipping.Missing")
        finally:
            sys.modules.pop(module, None)

    def test_unknown_name(self) -> None:
        with pytest.raises(
            WorkflowDefinitionError,
            match=r"workflow 'nowhere_at_all.Missing' is not registered in this process: "
            r"import the module that defines it \(or pass --import MODULE",
        ):
            load_workflow("nowhere_at_all.Missing")


def test_tags_given_as_a_bare_string_are_rejected() -> None:
    with pytest.raises(WorkflowDefinitionError, match="tags must be a tuple of str"):

        class BareTagFlow(Workflow):
            unique = Unique(key="baretag")
            tags = "orders"
            start = TagStep
            transitions = {(TagStep, "ok"): Done}


def test_umbrella_current_true_is_not_version_one() -> None:
    with pytest.raises(InvalidVersionsError, match="current = True"):

        class BoolCurrentFlow(Workflow):
            unique = Unique(key="boolcurrent")
            versions = {1: TagFlowV1}
            current = True


class TagStep(Step):
    events = ("ok",)


class TagFlowV1(Workflow):
    unique = Unique(key="tagflow")
    version = 1
    tags = ("orders", "eu")
    start = TagStep
    transitions = {(TagStep, "ok"): Done}


def test_tags_are_kept_on_the_definition() -> None:
    assert TagFlowV1.definition().tags == ("orders", "eu")
