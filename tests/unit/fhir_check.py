"""Judges of what FHIR out emits: the R4 definitions, as far as a package can say them.

``fhir.resources`` (8.x) has no R4 package; its R4B models are R4's for the resources we
emit (Observation, Flag, Bundle, OperationOutcome, CapabilityStatement: R4B changed none of
the elements we use). The models check structure, cardinality and primitive formats, not
required code bindings nor profiles, so the R4 value sets of the codes we emit and the HL7
vital-signs profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html) are checked here
as the specification states them.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"

#: R4 required bindings of the codes we emit (value sets of FHIR 4.0.1).
R4_CODES = {
    ("Observation", "status"): {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    ("Flag", "status"): {"active", "inactive", "entered-in-error"},
    ("Bundle", "type"): {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    },
}

#: Each HL7 vital-signs profile: the LOINC code it fixes for Observation.code and the UCUM
#: units its value (or its required components) may have; the bp panel has no value.
VITAL_SIGN_PROFILES: dict[str, dict[str, Any]] = {
    "85354-9": {"units": None, "components": {"8480-6": {"mm[Hg]"}, "8462-4": {"mm[Hg]"}}},
    "29463-7": {"units": {"kg", "g", "[lb_av]"}, "components": {}},
    "2708-6": {"units": {"%"}, "components": {}},
    "8867-4": {"units": {"/min"}, "components": {}},
}


def r4_problems(resource: dict[str, Any]) -> list[str]:
    """What the R4(B) model and the R4 required bindings refuse in ``resource``; [] if none."""
    kind = resource["resourceType"]
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except Exception as exc:  # noqa: BLE001 - any refusal of the model is the finding
        return [f"{kind}: {exc}"]
    problems = [
        f"{kind}.{field} {resource.get(field)!r} is not in the R4 value set"
        for (of, field), codes in R4_CODES.items()
        if of == kind and field in resource and resource[field] not in codes
    ]
    for entry in resource.get("entry", []):
        problems += r4_problems(entry["resource"])
    return problems


def _codes(concept: dict[str, Any], system: str) -> set[str]:
    return {c.get("code") for c in concept.get("coding", []) if c.get("system") == system}


def _quantity_problems(where: str, quantity: Any, units: set[str]) -> list[str]:
    if not isinstance(quantity, dict) or "value" not in quantity:
        return [f"{where}: a valueQuantity with a value"]
    if quantity.get("system") != UCUM or quantity.get("code") not in units:
        return [f"{where}: UCUM unit {sorted(units)}, got {quantity.get('code')!r}"]
    return []


def vital_signs_problems(observation: dict[str, Any]) -> list[str]:
    """Where ``observation`` breaks the vital-signs profile of its code; [] when it conforms."""
    problems = []
    category = [c for cat in observation.get("category", []) for c in cat.get("coding", [])]
    if not any(
        c.get("system") == "http://terminology.hl7.org/CodeSystem/observation-category"
        and c.get("code") == "vital-signs"
        for c in category
    ):
        problems.append("category: the vital-signs coding (VSCat)")
    subject = observation.get("subject") or {}
    if not (
        subject.get("type") == "Patient" or subject.get("reference", "").startswith("Patient/")
    ):
        problems.append("subject: a Reference(Patient)")
    effective = observation.get("effectiveDateTime") or observation.get("effectivePeriod")
    if not effective:
        problems.append("effective[x]: a dateTime or Period")
    profiles = [p for p in VITAL_SIGN_PROFILES if p in _codes(observation.get("code", {}), LOINC)]
    if len(profiles) != 1:
        return [*problems, "code: the LOINC code of exactly one vital-signs profile"]
    profile = VITAL_SIGN_PROFILES[profiles[0]]
    if profile["units"] is not None:
        if "valueQuantity" not in observation and "dataAbsentReason" not in observation:
            problems.append("vs-2: a value or a dataAbsentReason")
        elif "valueQuantity" in observation:
            problems += _quantity_problems(
                "valueQuantity", observation["valueQuantity"], profile["units"]
            )
    components = observation.get("component", [])
    for position, component in enumerate(components):
        if "valueQuantity" not in component and "dataAbsentReason" not in component:
            problems.append(f"vs-3: component[{position}] has a value or a dataAbsentReason")
    for code, units in profile["components"].items():
        matching = [c for c in components if code in _codes(c.get("code", {}), LOINC)]
        if len(matching) != 1:
            problems.append(f"component: exactly one LOINC {code}")
        elif "valueQuantity" in matching[0]:
            problems += _quantity_problems(f"component {code}", matching[0]["valueQuantity"], units)
    return problems
