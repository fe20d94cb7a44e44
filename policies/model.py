"""The fairpool policy (`apiVersion: fairpool.io/v1`, `kind: Policy`).

YAML keys are camelCase like Kubernetes objects; Python attributes are snake_case.
Unknown fields are errors everywhere (`extra="forbid"`), so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from policies.numbers import DECIMAL


def _ascii_number(what: str, example: str) -> BeforeValidator:
    """A number written as text (a quoted YAML value) must be in ASCII decimal notation:
    Python's `int`, `float` and `Decimal`, which read such text, would take `"1_0"` as
    10, `"2_4"` as 24 and `"٣"` as 3. Placed after a field's `Field(...)` in
    `Annotated`, the check leaves the JSON schema (so the generated CRD) as it was."""

    def check(value: object) -> object:
        if isinstance(value, bool):
            # Read as 1 or 0 otherwise: `maxReclaimsPerJob: false`, meant as "no
            # limit", became "never reclaim"; the CRD refuses it as no integer.
            raise PydanticCustomError(
                "number_bool",
                "expected a {what} such as {example}, not true/false",
                {"what": what, "example": repr(example)},
            )
        if isinstance(value, str) and not DECIMAL.fullmatch(value.strip()):
            raise PydanticCustomError(
                "number_text",
                "{text} is not a {what} in ASCII digits, such as {example}",
                {"text": repr(value), "what": what, "example": repr(example)},
            )
        return value

    return BeforeValidator(check)


NumberText = _ascii_number("number", "30")
"""For counts, seconds and weights."""
_DecimalText = _ascii_number("decimal number", "2.40")
"""For money."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    """No control character: names are printed on invoices and logs and go into the API
    (PostgreSQL stores no NUL; a newline split a report's line)."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"a control character ({found.group()!r}) at character {found.start() + 1}"
        )
    return value


Printable = AfterValidator(_printable)


def _plain(value: Decimal) -> str:
    """Money as stored and written to the Policy object: plain digits (`"100"`, not
    `"1E+2"`; `"0"`, not `"-0"`). `str(Decimal)` keeps an exponent, which the object's
    schema refuses (ApplyPolicy failed with INTERNAL, the object unchanged) and which a
    YAML 1.2 reader takes, unquoted, for a float."""
    return format(value.copy_abs() if value.is_zero() else value, "f")


PlainMoney = PlainSerializer(_plain, return_type=str, when_used="json")

PositiveDecimal = Annotated[
    Decimal, Field(ge=0, max_digits=18, decimal_places=6), _DecimalText, PlainMoney
]

# Sane ranges for every number and list of a policy: far beyond any real consortium, and
# small enough that no arithmetic on them overflows, loses precision or runs for long.
MAX_MEMBERS = 20_000
MAX_GPU_MODELS = 256
MAX_NAMESPACES_PER_MEMBER = 100
MAX_NAMESPACES = 100_000
"""Namespace patterns over all members."""
MAX_GPUS = 10_000_000
"""Any count of GPUs (purchased, caps, limits)."""
MAX_WEIGHT = 1_000_000.0
MAX_GRACE_SECONDS = 86_400
MAX_MIN_RUNTIME_SECONDS = 30 * 86_400
MAX_RECLAIMS = 1_000
RECLAIM_LIMIT_WINDOW_SECONDS = 12 * 3600
"""Half a day: several owners' waits for their entitlement (hours at the 99th percentile
in `python -m bench fairness`) fit in it, so an owner busy when the job was reclaimed is
usually done by then; and a job that can only ever borrow is kept off busy owners' nodes
no longer than that (docs/policy.md)."""
MAX_CONSOLIDATIONS = 1_000
MAX_HALF_LIFE_HOURS = 10 * 8_760.0
MAX_SHARED_FIXED_COSTS = 100
MAX_VERSION = 2**31 - 1
"""The audit history's version column (a 32-bit integer in PostgreSQL): a larger version
in a policy file could not be recorded, and the API failed to start without naming the
field (it was 2**53, what JSON numbers hold)."""
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9*?]*[a-z0-9*?])?$"
"""A namespace (a DNS-1123 label), or a pattern of one: `*` and `?` after a first literal
character, so no pattern matches every namespace."""
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
"""A Kubernetes label value (GPU models are read from `nvidia.com/gpu.product`)."""
CURRENCY = r"^[A-Z]{3}$"

GpuCount = Annotated[int, Field(ge=0, le=MAX_GPUS), NumberText]
NamespacePattern = Annotated[str, Field(min_length=1, max_length=63, pattern=NAMESPACE_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


class GPUModel(_Strict):
    """A GPU model as named by `nvidia.com/gpu.product`, with its hourly cost."""

    name: str = Field(min_length=1, max_length=63, pattern=LABEL_VALUE)
    hourly_cost: PositiveDecimal
    currency: str = Field(default="EUR", pattern=CURRENCY)


class Member(_Strict):
    """An organization in the consortium."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    namespaces: list[NamespacePattern] = Field(
        default_factory=list, max_length=MAX_NAMESPACES_PER_MEMBER
    )
    weight: Annotated[float, NumberText] = Field(
        default=1.0, gt=0, le=MAX_WEIGHT, allow_inf_nan=False
    )
    purchased: dict[str, GpuCount] = Field(default_factory=dict, max_length=MAX_GPU_MODELS)
    """GPUs bought with money (no hardware), per GPU model: part of the entitlement."""
    max_gpus: GpuCount | None = None
    """Hard cap on the GPUs the member may hold at once, over all models."""
    lending_limit: GpuCount | None = None
    """At most this many of the member's GPUs may be lent to others at once."""
    checkpointable: bool = False
    """Preempted jobs of this member resume where they stopped instead of from zero."""

    def owns_namespace(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


class SharingRules(_Strict):
    borrowing: bool = True
    reclaim_grace_period_seconds: Annotated[int, NumberText] = Field(
        default=30, ge=0, le=MAX_GRACE_SECONDS
    )
    min_runtime_seconds: Annotated[int, NumberText] = Field(
        default=0, ge=0, le=MAX_MIN_RUNTIME_SECONDS
    )
    """A reclaimable pod younger than this is not preempted..."""
    preempt_below_min_runtime: bool = False
    """...unless this is set."""
    max_reclaims_per_job: Annotated[int, Field(ge=0, le=MAX_RECLAIMS), NumberText] | None = 3
    """A job reclaimed this many times is no longer a victim; beyond its member's
    entitlement it then runs only on nodes whose owners are not likely to want them back
    (a job bigger than that entitlement: see the next field). None: no limit."""
    reclaim_limit_window_seconds: Annotated[int, NumberText] = Field(
        default=RECLAIM_LIMIT_WINDOW_SECONDS, ge=0, le=MAX_MIN_RUNTIME_SECONDS
    )
    """For this long after its last reclaim, a job at `max_reclaims_per_job` that is
    bigger than its member's entitlement runs only where one that fits it would; then
    anywhere there is room. 0: anywhere at once."""
    usage_half_life_hours: (
        Annotated[float, Field(gt=0, le=MAX_HALF_LIFE_HOURS, allow_inf_nan=False), NumberText]
        | None
    ) = None
    max_consolidations_per_cycle: Annotated[int, NumberText] = Field(
        default=2, ge=0, le=MAX_CONSOLIDATIONS
    )
    """Jobs blocked by fragmentation that consolidation moves borrowed work for, at most,
    per scheduling cycle; 0 turns consolidation off."""
    max_consolidation_loss_seconds: Annotated[int, NumberText] = Field(
        default=3600, ge=0, le=MAX_MIN_RUNTIME_SECONDS
    )
    """A consolidation throws away at most this many seconds of the waiting job's GPUs
    in work (GPU-seconds since the last start of the moved jobs that restart from zero,
    per GPU of the waiting job)."""
    head_start: bool = False
    """Before the fair-share order, each member's first queued one-pod job of 2 or more
    GPUs per GPU model that keeps it within its entitlement is placed if it fits
    (docs/glossary.md, "head start"). Off by default: a trade, docs/policy.md."""
    reclaim_overtaken_after_seconds: (
        Annotated[int, Field(ge=0, le=MAX_MIN_RUNTIME_SECONDS), NumberText] | None
    ) = None
    """A job of 2 or more GPUs that has waited this long takes back, when nothing else
    makes room for it, the GPUs of its member's own later, smaller jobs that resume where
    they stop (docs/glossary.md, "overtaken"). None: never. Off by default: a trade,
    docs/policy.md."""


class IdleCostRule(StrEnum):
    OWNER = "owner"
    BY_CONTRIBUTION = "by-contribution"
    BY_USAGE = "by-usage"


class SplitRule(StrEnum):
    EQUAL = "equal"
    BY_CONTRIBUTION = "by-contribution"
    BY_USAGE = "by-usage"
    FIXED = "fixed"


@functools.cache
def _iana_zones() -> frozenset[str]:
    """The IANA time zone names, from the bundled `tzdata` package first (the same on
    every host), without the host-only entries `localtime`, `posixrules`, `right/*`."""
    return frozenset(
        z
        for z in zoneinfo.available_timezones()
        if z not in {"localtime", "posixrules", "Factory"}
        and not z.startswith(("right/", "posix/"))
    )


class SharedFixedCost(_Strict):
    """A monthly cost of the pool that is not a GPU (network, staff, power, rack space)."""

    name: Annotated[str, Printable] = Field(min_length=1, max_length=200)
    monthly_amount: PositiveDecimal
    split: SplitRule = SplitRule.EQUAL
    shares: (
        dict[
            str,
            Annotated[
                Decimal,
                Field(ge=0, le=1, max_digits=18, decimal_places=6),
                _DecimalText,
                PlainMoney,
            ],
        ]
        | None
    ) = Field(default=None, max_length=MAX_MEMBERS)
    """Fractions per member when `split: fixed`; they must sum to 1."""

    @model_validator(mode="after")
    def _fixed_needs_shares(self) -> SharedFixedCost:
        if self.split is SplitRule.FIXED:
            if not self.shares:
                raise ValueError("split 'fixed' needs 'shares' (member -> fraction)")
            if sum(self.shares.values()) != Decimal(1):
                raise ValueError(f"shares must sum to 1, not {sum(self.shares.values())}")
        elif self.shares is not None:
            raise ValueError(f"'shares' is only used with split 'fixed', not '{self.split}'")
        return self


class BillingRules(_Strict):
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    currency: str = Field(default="EUR", pattern=CURRENCY)
    idle_cost: IdleCostRule = IdleCostRule.OWNER
    shared_fixed_costs: list[SharedFixedCost] = Field(
        default_factory=list, max_length=MAX_SHARED_FIXED_COSTS
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # An IANA name: `localtime` follows the host's clock setting, and `posixrules`
        # or `right/UTC` exist on some hosts only, so a month would be cut differently,
        # or the policy be valid, depending on the machine that reads it.
        if value not in _iana_zones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name, such as 'Europe/Paris')")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class Metadata(_Strict):
    name: Annotated[str, Printable] = Field(default="fairpool", min_length=1, max_length=253)
    version: Annotated[int, NumberText] = Field(default=0, ge=0, le=MAX_VERSION)
    """Set by the policy store on every applied change; 0 for a file never applied."""


Loc = tuple[str | int, ...]


RESERVED_MEMBER_NAMES = {
    "unattributed": "the cost report bills to it the usage of namespaces no member claims",
    "pool": "the cost report's summary names its row of the pool's totals so",
}
"""Names a member cannot have, and why: a member so named was billed the usage of every
unclaimed namespace, or its summary row was mistaken for the pool's totals."""


def name_issues(
    gpu_models: Iterable[object], members: Iterable[tuple[object, Iterable[object]]]
) -> list[tuple[Loc, str]]:
    """GPU models and members named twice, members with a reserved name
    (`RESERVED_MEMBER_NAMES`), and namespaces claimed by two members, each at its path
    under `spec`. Names that are not strings are skipped: read from a document
    that failed validation too (`Policy.name_issues_of`), they are reported with its field
    errors, so a user fixing a policy sees them in the same pass."""
    found: list[tuple[Loc, str]] = []
    # Sets and dicts, not list scans: the cost stays linear in the document's size.
    seen: set[str] = set()
    for i, name in enumerate(gpu_models):
        if isinstance(name, str):
            if name in seen:
                found.append((("gpuModels", i, "name"), f"duplicate GPU model {name!r}"))
            seen.add(name)
    names: set[str] = set()
    claimed: dict[str, str] = {}
    for i, (name, patterns) in enumerate(members):
        if not isinstance(name, str):
            continue
        if name in names:
            found.append((("members", i, "name"), f"duplicate member {name!r}"))
        if name in RESERVED_MEMBER_NAMES:
            why = RESERVED_MEMBER_NAMES[name]
            found.append((("members", i, "name"), f"member name {name!r} is reserved: {why}"))
        names.add(name)
        for j, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                continue
            owner = claimed.setdefault(pattern, name)
            if owner != name:
                found.append(
                    (
                        ("members", i, "namespaces", j),
                        f"namespace {pattern!r} is already claimed by member {owner!r}",
                    )
                )
    return found


def raw_list(parent: object, *keys: str) -> list[object]:
    """The list under the first of `keys` (a field's YAML name or its Python name) in a
    mapping of a document not validated yet; [] when there is none."""
    if isinstance(parent, Mapping):
        for key in keys:
            value = parent.get(key)
            if isinstance(value, list):
                return value
    return []


def raw_field(item: object, key: str) -> object:
    return item.get(key) if isinstance(item, Mapping) else None


class PolicySpec(_Strict):
    gpu_models: list[GPUModel] = Field(min_length=1, max_length=MAX_GPU_MODELS)
    members: list[Member] = Field(min_length=1, max_length=MAX_MEMBERS)
    sharing: SharingRules = Field(default_factory=SharingRules)
    billing: BillingRules = Field(default_factory=BillingRules)

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems between fields (unknown names, duplicates), each at its exact path.

        Kept out of pydantic validators so each one names the offending field, not just
        `spec`, and so they are all reported at once."""
        found = name_issues(
            [gpu.name for gpu in self.gpu_models],
            [(member.name, member.namespaces) for member in self.members],
        )
        models = dict.fromkeys(gpu.name for gpu in self.gpu_models)
        known_models = ", ".join(list(models)[:20])
        names = {member.name for member in self.members}
        namespaces = 0
        for i, member in enumerate(self.members):
            namespaces += len(member.namespaces)
            for model in member.purchased:
                if model not in models:
                    found.append(
                        (
                            ("members", i, "purchased", model),
                            f"unknown GPU model {model!r} (known: {known_models})",
                        )
                    )
        if namespaces > MAX_NAMESPACES:
            found.append(
                (("members",), f"{namespaces:,} namespaces in all, at most {MAX_NAMESPACES:,}")
            )
        # Billing keys each cost by its name: a second one of a name replaced the first
        # in the members' shares while the pool cost counted both.
        costs: set[str] = set()
        for i, cost in enumerate(self.billing.shared_fixed_costs):
            if cost.name in costs:
                found.append(
                    (
                        ("billing", "sharedFixedCosts", i, "name"),
                        f"duplicate shared fixed cost {cost.name!r}",
                    )
                )
            costs.add(cost.name)
        for i, gpu in enumerate(self.gpu_models):
            if gpu.currency != self.billing.currency:
                found.append(
                    (
                        ("gpuModels", i, "currency"),
                        f"{gpu.currency} differs from billing currency {self.billing.currency}",
                    )
                )
        for i, cost in enumerate(self.billing.shared_fixed_costs):
            for share_name in cost.shares or {}:
                if share_name not in names:
                    found.append(
                        (
                            ("billing", "sharedFixedCosts", i, "shares", share_name),
                            f"unknown member {share_name!r}",
                        )
                    )
        return [(("spec", *loc), message) for loc, message in found]


class Policy(_Strict):
    api_version: Literal["fairpool.io/v1"]
    kind: Literal["Policy"]
    metadata: Metadata = Field(default_factory=Metadata)
    spec: PolicySpec

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        return self.spec.reference_issues()

    @staticmethod
    def name_issues_of(data: Mapping[str, object]) -> list[tuple[Loc, str]]:
        """`name_issues` of a document that failed validation, read as written."""
        spec = data.get("spec")
        members = [
            (raw_field(m, "name"), raw_list(m, "namespaces")) for m in raw_list(spec, "members")
        ]
        gpu_models = [raw_field(g, "name") for g in raw_list(spec, "gpuModels", "gpu_models")]
        return [(("spec", *loc), message) for loc, message in name_issues(gpu_models, members)]

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def members(self) -> list[Member]:
        return self.spec.members

    @property
    def sharing(self) -> SharingRules:
        return self.spec.sharing

    @property
    def billing(self) -> BillingRules:
        return self.spec.billing

    def member(self, name: str) -> Member:
        for member in self.spec.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def member_names(self) -> list[str]:
        return [m.name for m in self.spec.members]

    def gpu_model(self, name: str) -> GPUModel:
        for model in self.spec.gpu_models:
            if model.name == name:
                return model
        raise KeyError(name)

    def unpriced_models(self, node_models: Iterable[str | None]) -> dict[str, int]:
        """The GPU models among `node_models` (one entry per node with GPUs; None for a
        node that names none) that this policy does not price, with their nodes."""
        priced = {m.name for m in self.spec.gpu_models}
        unpriced: dict[str, int] = {}
        for model in node_models:
            if model is not None and model not in priced:
                unpriced[model] = unpriced.get(model, 0) + 1
        return unpriced

    def price_gaps(self, node_models: Iterable[str | None]) -> str:
        """Why this policy cannot bill a cluster whose nodes have these GPU models (as
        `unpriced_models`), or "" when it prices every one: a month with an hour under
        such a policy fails to bill ("has no price"), so the daemon and the API refuse
        it while such nodes are there."""
        return price_gaps_text(self.unpriced_models(node_models))

    def member_for_namespace(self, namespace: str) -> str | None:
        """The first member (in policy order) whose namespace patterns match."""
        for member in self.spec.members:
            if member.owns_namespace(namespace):
                return member.name
        return None


def price_gaps_text(unpriced: Mapping[str, int]) -> str:
    """`Policy.price_gaps` of what `Policy.unpriced_models` found."""
    if not unpriced:
        return ""
    listed = ", ".join(f"{m!r} ({n} node(s))" for m, n in sorted(unpriced.items()))
    return (
        f"spec.gpuModels: the cluster has nodes of {listed}, which the policy must price "
        "(their hours could not be billed)"
    )
