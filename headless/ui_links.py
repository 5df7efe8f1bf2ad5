"""Node ids and links of a UI-format workflow as the frontend saves them: 0.4 link arrays
``[id, origin, origin_slot, target, target_slot, type]`` or schema-1 objects (shared by the UI→API
conversion, the subgraph and group-node expansions and `--set` on primitive nodes)."""


def is_id(value):
    """A node or link id: an int or a str (not a bool)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def raw_link_fields(link):
    """(id, origin id, origin slot) of a link in either form, unchecked; None for anything else."""
    if isinstance(link, list) and len(link) >= 5:
        return link[0], link[1], link[2]
    if isinstance(link, dict):
        return link.get("id"), link.get("origin_id"), link.get("origin_slot")
    return None


def link_fields(link):
    """`raw_link_fields`, or None when the link is malformed (ids that are not ids, a slot that is not an int)."""
    fields = raw_link_fields(link)
    if fields is None:
        return None
    ok = is_id(fields[0]) and is_id(fields[1]) and isinstance(fields[2], int) and not isinstance(fields[2], bool)
    return fields if ok else None
