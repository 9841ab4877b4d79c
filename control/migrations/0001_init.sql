-- Config resources, stored whole as JSON and keyed by kind/namespace/name.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    resource_version INTEGER NOT NULL,
    object TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- Global monotonically increasing counters (resourceVersion).
CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('resource_version', 0);

-- Stable service VIPs, allocated once per host and kept across restarts.
CREATE TABLE vips (
    host TEXT PRIMARY KEY NOT NULL,
    vip TEXT NOT NULL UNIQUE
);
