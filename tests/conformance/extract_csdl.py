"""Extract the mail subset of Microsoft Graph's v1.0 CSDL into a small checked-in JSON file.

The full CSDL (``schemas/v1.0-Prod.csdl`` of microsoftgraph/msgraph-metadata, ~3.5 MB) is the
authority on property names, types, enum members and action parameters (graph.md 7). The
conformance tests only need the types the emulator writes or reads, so this script keeps those:
message and its bases, mailFolder, outlookCategory, subscription and changeNotification (for the
notifications tests), the complex types they use, their enums, and every action or function
bound to them. The output is deterministic (sorted), so ``test_schema_extract`` can check that
the checked-in file is what the CSDL says.

Usage::

    python -m tests.conformance.extract_csdl [CSDL] [OUTPUT]

Defaults: ``/work/shared/reference/graph-v1.0-csdl.xml`` and
``src/m365sim/schema/graph-mail.json``. Standard library only.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NAMESPACE = "microsoft.graph"
DEFAULT_CSDL = Path("/work/shared/reference/graph-v1.0-csdl.xml")
DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "src/m365sim/schema/graph-mail.json"

ENTITY_TYPES = (
    "entity",
    "outlookItem",
    "message",
    "mailFolder",
    "outlookCategory",
    "outlookUser",
    "attachment",
    "fileAttachment",
    "itemAttachment",
    "subscription",
)
COMPLEX_TYPES = (
    "recipient",
    "emailAddress",
    "itemBody",
    "followupFlag",
    "dateTimeTimeZone",
    "internetMessageHeader",
    "changeNotification",
    "changeNotificationCollection",
    "changeNotificationEncryptedContent",
    "resourceData",
)
ENUM_TYPES = (
    "bodyType",
    "categoryColor",
    "changeType",
    "followupFlagStatus",
    "importance",
    "inferenceClassificationType",
    "lifecycleEventType",
)
# Actions and functions bound to these types are kept.
BINDING_TYPES = (
    "graph.message",
    "graph.mailFolder",
    "graph.subscription",
    "Collection(graph.message)",
    "Collection(graph.mailFolder)",
)


def _nullable(element: ET.Element) -> bool:
    return element.get("Nullable", "true").lower() != "false"


def _structured(element: ET.Element, *, navigation: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "baseType": element.get("BaseType"),
        "abstract": element.get("Abstract", "false") == "true",
        "openType": element.get("OpenType", "false") == "true",
        "properties": {
            p.get("Name", ""): {"type": p.get("Type", ""), "nullable": _nullable(p)}
            for p in element.findall(f"{EDM}Property")
        },
    }
    if navigation:
        out["navigationProperties"] = {
            p.get("Name", ""): {"type": p.get("Type", "")}
            for p in element.findall(f"{EDM}NavigationProperty")
        }
    return out


def _operation(element: ET.Element) -> dict[str, Any] | None:
    params = element.findall(f"{EDM}Parameter")
    if element.get("IsBound") != "true" or not params:
        return None
    binding = params[0].get("Type", "")
    if binding not in BINDING_TYPES:
        return None
    returns = element.find(f"{EDM}ReturnType")
    return {
        "name": element.get("Name", ""),
        "bindingType": binding,
        "parameters": [
            {"name": p.get("Name", ""), "type": p.get("Type", ""), "nullable": _nullable(p)}
            for p in params[1:]
        ],
        "returnType": returns.get("Type") if returns is not None else None,
    }


def extract(csdl: Path) -> dict[str, Any]:
    """The mail subset of ``csdl`` as plain, deterministic JSON data."""
    root = ET.parse(csdl).getroot()
    schema = next(s for s in root.iter(f"{EDM}Schema") if s.get("Namespace") == NAMESPACE)
    entities = {e.get("Name"): e for e in schema.findall(f"{EDM}EntityType")}
    complexes = {e.get("Name"): e for e in schema.findall(f"{EDM}ComplexType")}
    enums = {e.get("Name"): e for e in schema.findall(f"{EDM}EnumType")}
    operations: dict[str, list[dict[str, Any]]] = {"actions": [], "functions": []}
    for tag, key in ((f"{EDM}Action", "actions"), (f"{EDM}Function", "functions")):
        for element in schema.findall(tag):
            op = _operation(element)
            if op is not None:
                operations[key].append(op)
    for ops in operations.values():
        ops.sort(key=lambda o: (o["name"], o["bindingType"]))
    return {
        "source": "microsoftgraph/msgraph-metadata schemas/v1.0-Prod.csdl (mail subset)",
        "namespace": NAMESPACE,
        "entityTypes": {
            name: _structured(entities[name], navigation=True) for name in sorted(ENTITY_TYPES)
        },
        "complexTypes": {
            name: _structured(complexes[name], navigation=False) for name in sorted(COMPLEX_TYPES)
        },
        "enumTypes": {
            name: [m.get("Name", "") for m in enums[name].findall(f"{EDM}Member")]
            for name in sorted(ENUM_TYPES)
        },
        **operations,
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    csdl = Path(argv[0]) if argv else DEFAULT_CSDL
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(extract(csdl)))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
