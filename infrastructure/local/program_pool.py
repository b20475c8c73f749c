"""moto's interpreter, made to run many executions at once: parsed programs kept in a
pool and reused (a definition parses once, not per execution), parsing serialized (moto's
parsers keep state on their classes), and a failed Parallel branch's error passed on as
AWS passes it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from infrastructure.local.patching import Patches, Replacement

# States whose parsed components keep no per-execution data between runs (moto's
# interpreter keeps that in the execution's environment). A Parallel state's branch
# workers live only inside one evaluation, so it is reusable when its branches are; Map
# keeps item processors and is not.
REUSABLE_STATE_TYPES = frozenset({"Task", "Choice", "Pass", "Fail", "Succeed", "Wait"})
PARALLEL = "Parallel"


def _all_reusable(states: Mapping[str, Any]) -> bool:
    for state in states.values():
        if state.get("Type") == PARALLEL:
            if not all(_all_reusable(branch.get("States", {})) for branch in state.get("Branches", [])):
                return False
        elif state.get("Type") not in REUSABLE_STATE_TYPES:
            return False
    return True


def _branch_error_name(error_name: str) -> Any:
    """The error a failed Parallel branch passes on, as AWS passes it on.

    moto wraps it as a custom error name, which refuses the reserved `States.` prefix, so
    a branch that failed with `States.Timeout` would fail its Parallel state with
    `States.Runtime` instead.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )

    if error_name and error_name.startswith("States."):
        try:
            return StatesErrorName.from_name(error_name)
        except (ValueError, KeyError):
            pass
    return CustomErrorName(error_name=error_name)


PROGRAM_POOL_SIZE = 16
# Held while moto parses an ASL definition or an intrinsic function (see ProgramPool).
# Re-entrant: parsing a definition parses the intrinsic functions inside it.
PARSE_LOCK = threading.RLock()


class ProgramPool:
    """Two wrappers around moto's ``ExecutionWorker`` (the body of an execution thread),
    and one fix to its Parallel state (see ``_branch_error_name``).

    * ``_execution_logic``: when it returns, the execution's status, output, error and
      cause are all set; the worker is flagged and its waiter woken, instead of being
      polled. It also notices a worker that died without reporting an end. Waiters
      still re-check on a slow poll, so a moto change that bypasses this costs
      latency, not correctness.
    * ``_get_evaluation_entrypoint``: moto re-parses the ASL with ANTLR for every
      execution (about 17 ms for the register workflow, over half of a run). Parsed
      programs of definitions made only of simple states (and Parallel states of
      them) go back to a small pool after the execution, so no program is ever shared
      by two running executions.
    * ``AmazonStateLanguageParser.parse`` and ``IntrinsicParser.parse`` run under one
      lock (see ``PARSE_LOCK``): moto's ASL ``Preprocessor`` keeps its query-language
      scopes in a class-level list and ANTLR's Python runtime shares its prediction
      caches, so programs parsed from several threads at once (more executions starting
      together than the pool holds) can fail inside the interpreter.
    """

    reuse_programs = True
    events: dict[str, threading.Event] = {}  # noqa: RUF012
    programs: dict[str, list[Any]] = {}  # noqa: RUF012
    reusable: dict[str, bool] = {}  # noqa: RUF012

    @staticmethod
    def _parser_classes() -> list[Any]:
        from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
        from moto.stepfunctions.parser.asl.parse.intrinsic.intrinsic_parser import IntrinsicParser

        return [AmazonStateLanguageParser, IntrinsicParser]

    @staticmethod
    def _branches_module() -> Any:
        from moto.stepfunctions.parser.asl.component.state.exec.state_parallel import branches_decl

        return branches_decl

    @staticmethod
    def _worker_class() -> Any:
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        return ExecutionWorker

    @classmethod
    def _is_reusable(cls, definition: str) -> bool:
        reusable = cls.reusable.get(definition)
        if reusable is None:
            try:
                reusable = _all_reusable(json.loads(definition).get("States", {}))
            except (ValueError, AttributeError):
                reusable = False
            cls.reusable[definition] = reusable
        return reusable

    @classmethod
    def _release_program(cls, worker: Any) -> None:
        from moto.stepfunctions.parser.asl.eval.program_state import ProgramTimedOut

        borrowed = getattr(worker, "local_engine_program", None)
        if borrowed is None or getattr(worker, "local_engine_crash", None) is not None:
            return
        # A timed-out program may still be running in moto's inner thread.
        if worker.env is None or isinstance(worker.env.program_state(), ProgramTimedOut):
            return
        definition, program = borrowed
        pool = cls.programs.setdefault(definition, [])
        if len(pool) < PROGRAM_POOL_SIZE:
            pool.append(program)

    @classmethod
    def _replacements(cls) -> list[Replacement]:
        worker_class = cls._worker_class()
        run = worker_class._execution_logic
        parse = worker_class._get_evaluation_entrypoint

        def _execution_logic(worker: Any) -> None:
            try:
                run(worker)
            except BaseException as exc:
                worker.local_engine_crash = exc
                raise
            finally:
                worker.local_engine_finished = True
                arn = worker._evaluation_details.execution_details.arn
                event = cls.events.get(arn)
                if event is not None:
                    event.set()
                cls._release_program(worker)

        def _get_evaluation_entrypoint(worker: Any) -> Any:
            definition = worker._evaluation_details.state_machine_details.definition
            if not (cls.reuse_programs and cls._is_reusable(definition)):
                return parse(worker)
            try:
                program = cls.programs.get(definition, []).pop()
            except IndexError:
                program = parse(worker)
            worker.local_engine_program = (definition, program)
            return program

        replacements: list[Replacement] = [
            (worker_class, "_execution_logic", _execution_logic),
            (worker_class, "_get_evaluation_entrypoint", _get_evaluation_entrypoint),
            (cls._branches_module(), "CustomErrorName", _branch_error_name),
        ]
        for parser_class in cls._parser_classes():
            original = parser_class.__dict__["parse"]
            parse_source = original.__func__ if isinstance(original, staticmethod) else original

            def locked(source: str, _parse: Callable[[str], Any] = parse_source) -> Any:
                with PARSE_LOCK:
                    return _parse(source)

            replacements.append((parser_class, "parse", staticmethod(locked)))
        return replacements

    @classmethod
    def _forget_programs(cls) -> None:
        cls.programs.clear()
        cls.reusable.clear()

    @classmethod
    def install(cls) -> None:
        _PATCHES.install()

    @classmethod
    def uninstall(cls) -> None:
        _PATCHES.uninstall()

    @classmethod
    @contextlib.contextmanager
    def watching(cls, execution_arn: str) -> Iterator[threading.Event]:
        event = cls.events.setdefault(execution_arn, threading.Event())
        try:
            yield event
        finally:
            cls.events.pop(execution_arn, None)


_PATCHES = Patches(ProgramPool._replacements, on_restore=ProgramPool._forget_programs)
