//! The OpenAPI 3 document served at `/v1/openapi.json`. A test (`tests/server.rs`) checks that
//! its paths and methods are exactly the ones the router serves.

use serde_json::{json, Value};

use crate::limits::{DEFAULT_LIST, DEFAULT_PEERS, MAX_LIST, MAX_PEERS};

fn error_responses(codes: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for &code in codes {
        let description = match code {
            "400" => "Malformed request; `field` names the bad field.",
            "401" => "Missing or unknown bearer token.",
            "403" => "The token's role may not do this, or the agent (or swarm) belongs to another token.",
            "404" => "Unknown id.",
            "409" => "The swarm runs with another layout (`field` is `layout`), a live agent at another address holds the id (`field` is `id`), or the swarm's leader is live and publishing (`field` is `leader`).",
            "413" => "Body over the size limit.",
            "429" => "Rate limit of the token exceeded; see `Retry-After`.",
            "503" => "The tracker's store (Redis, for replicas) is unreachable; retry later.",
            _ => "Error.",
        };
        map.insert(
            code.into(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(map)
}

fn ok(status: &str, description: &str, schema: &str, errors: &[&str]) -> Value {
    let mut responses = error_responses(errors);
    responses[status] = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    });
    responses
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn path_id(description: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// Every authenticated route: 503 when a networked store does not answer.
const AUTH_ERRORS: [&str; 4] = ["401", "403", "429", "503"];

fn errs(extra: &[&'static str]) -> Vec<&'static str> {
    let mut all = AUTH_ERRORS.to_vec();
    all.extend_from_slice(extra);
    all
}

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "field": {"type": "string"}}},
        "ContentId": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "Layout": {"type": "object", "required": ["size", "piece_size"], "properties": {
            "size": {"type": "integer", "format": "uint64", "maximum": 9223372036854775808_u64},
            "piece_size": {"type": "integer", "format": "uint64", "description": "a power of two"}}},
        "Bits": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$",
            "description": "Hex of the bitfield bytes, most significant bit first, one bit per piece of the layout."},
        "Holding": {"type": "object", "required": ["content", "name", "layout"], "properties": {
            "content": {"$ref": "#/components/schemas/ContentId"},
            "name": {"type": "string", "maxLength": 1024},
            "layout": {"$ref": "#/components/schemas/Layout"},
            "pieces": {"$ref": "#/components/schemas/Bits"}}},
        "RegisterRequest": {"type": "object", "required": ["addr"], "properties": {
            "addr": {"type": "string", "example": "10.0.0.5:7701"},
            "scheme": {"type": "string", "enum": ["http", "https"], "default": "http", "description": "Whether the piece server speaks HTTPS; absent: http."},
            "upload_capacity": {"type": "integer", "format": "uint64"},
            "holdings": {"type": "array", "items": {"$ref": "#/components/schemas/Holding"}}}},
        "HeartbeatRequest": {"type": "object", "properties": {"load": {"type": "integer", "format": "uint32"},
            "served": {"type": "integer", "format": "uint64", "description": "bytes sent to peers since the agent started; send only when the lease grant's reads_served is true"}}},
        "AnnounceRequest": {"type": "object", "properties": {
            "removed": {"type": "array", "items": {"$ref": "#/components/schemas/ContentId"}},
            "holdings": {"type": "array", "items": {"$ref": "#/components/schemas/Holding"}},
            "pieces": {"type": "array", "items": {"type": "object", "required": ["content", "have"], "properties": {
                "content": {"$ref": "#/components/schemas/ContentId"},
                "have": {"type": "array", "items": {"type": "integer", "format": "uint32"}}}}}}},
        "LeaseGrant": {"type": "object", "required": ["lease_ms"], "properties": {"lease_ms": {"type": "integer"},
            "reads_served": {"type": "boolean", "description": "the tracker reads HeartbeatRequest.served"}}},
        "Peer": {"type": "object", "required": ["id", "addr", "upload_capacity", "load", "complete"], "properties": {
            "id": {"type": "string"}, "addr": {"type": "string"},
            "scheme": {"type": "string", "enum": ["http", "https"], "default": "http", "description": "Whether the piece server speaks HTTPS; absent: http."},
            "upload_capacity": {"type": "integer"}, "load": {"type": "integer"},
            "complete": {"type": "boolean"}, "pieces": {"$ref": "#/components/schemas/Bits"}}},
        "PeersResponse": {"type": "object", "required": ["content", "layout", "peers"], "properties": {
            "content": {"$ref": "#/components/schemas/ContentId"},
            "layout": {"$ref": "#/components/schemas/Layout"},
            "peers": {"type": "array", "items": {"$ref": "#/components/schemas/Peer"}}}},
        "ContentSummary": {"type": "object", "required": ["id", "name", "layout", "manifest", "complete_holders", "partial_holders"], "properties": {
            "id": {"$ref": "#/components/schemas/ContentId"}, "name": {"type": "string"},
            "layout": {"$ref": "#/components/schemas/Layout"}, "manifest": {"type": "boolean"},
            "complete_holders": {"type": "integer"}, "partial_holders": {"type": "integer"}}},
        "ContentList": {"type": "object", "required": ["contents"], "properties": {
            "contents": {"type": "array", "items": {"$ref": "#/components/schemas/ContentSummary"}}}},
        "AgentSummary": {"type": "object", "required": ["id", "addr", "upload_capacity", "load", "holdings", "complete_holdings", "lease_remaining_ms"], "properties": {
            "id": {"type": "string"}, "addr": {"type": "string"}, "upload_capacity": {"type": "integer"},
            "scheme": {"type": "string", "enum": ["http", "https"], "default": "http", "description": "Whether the piece server speaks HTTPS; absent: http."},
            "load": {"type": "integer"}, "holdings": {"type": "integer"},
            "complete_holdings": {"type": "integer"}, "lease_remaining_ms": {"type": "integer"},
            "last_seen_ms": {"type": "integer"}, "served": {"type": "integer"},
            "upload_rate": {"type": "integer", "description": "bytes per second sent to peers between the last two heartbeats"}}},
        "AgentList": {"type": "object", "required": ["agents"], "properties": {
            "agents": {"type": "array", "items": {"$ref": "#/components/schemas/AgentSummary"}}}},
        "Manifest": {"type": "object", "required": ["size", "piece_size", "digests"], "properties": {
            "size": {"type": "integer"}, "piece_size": {"type": "integer"},
            "digests": {"type": "string", "description": "Hex of the 32-byte BLAKE3 of every piece, concatenated."}}},
        "ManifestPublished": {"type": "object", "required": ["content", "created"], "properties": {
            "content": {"$ref": "#/components/schemas/ContentId"}, "created": {"type": "boolean"}}},
        "UrlKey": {"type": "object", "required": ["url", "size"], "properties": {
            "url": {"type": "string"}, "size": {"type": "integer"},
            "etag": {"type": "string"}, "last_modified": {"type": "string"}}},
        "PublishUrlRequest": {"type": "object", "required": ["key", "content"], "properties": {
            "key": {"$ref": "#/components/schemas/UrlKey"}, "content": {"$ref": "#/components/schemas/ContentId"}}},
        "UrlMapping": {"type": "object", "required": ["key", "content", "publisher", "published_at"], "properties": {
            "key": {"$ref": "#/components/schemas/UrlKey"}, "content": {"$ref": "#/components/schemas/ContentId"},
            "publisher": {"type": "string"}, "published_at": {"type": "integer"}}},
        "CreateSwarmRequest": {"type": "object", "required": ["key", "layout", "agent"], "properties": {
            "key": {"$ref": "#/components/schemas/UrlKey"},
            "layout": {"$ref": "#/components/schemas/Layout"},
            "agent": {"type": "string", "description": "Leads the swarm if this request creates it"}}},
        "SwarmDigests": {"type": "object", "required": ["known", "digests"], "properties": {
            "known": {"$ref": "#/components/schemas/Bits"},
            "digests": {"type": "string", "description": "Hex of the 32-byte BLAKE3 of every piece set in `known`, in piece order."}}},
        "SwarmInfo": {"type": "object", "required": ["id", "key", "layout", "leader", "created", "digests"], "properties": {
            "id": {"$ref": "#/components/schemas/ContentId"},
            "key": {"$ref": "#/components/schemas/UrlKey"},
            "layout": {"$ref": "#/components/schemas/Layout"},
            "leader": {"type": "string", "description": "The agent fetching from the origin and publishing digests: the creator, or the last to take over"},
            "created": {"type": "boolean"},
            "digests": {"$ref": "#/components/schemas/SwarmDigests"}}},
        "TakeOverRequest": {"type": "object", "required": ["agent"], "properties": {
            "agent": {"type": "string", "description": "Leads the swarm if the takeover succeeds; registered by the caller's token"}}},
        "PublishDigestsRequest": {"type": "object", "required": ["pieces"], "properties": {
            "pieces": {"type": "array", "items": {"type": "object", "required": ["index", "digest"], "properties": {
                "index": {"type": "integer", "format": "uint32"},
                "digest": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}}}}},
        "ReportRequest": {"type": "object", "required": ["agent", "piece", "reason"], "properties": {
            "agent": {"type": "string", "description": "The peer that sent the bad piece"},
            "piece": {"type": "integer", "format": "uint32"},
            "reporter": {"type": "string", "description": "The reporting agent; required with a fleet token"},
            "reason": {"type": "string", "maxLength": 1024}}},
        "ReportAccepted": {"type": "object"},
        "UrlReportRequest": {"type": "object", "required": ["key", "content", "piece", "reason"], "properties": {
            "key": {"$ref": "#/components/schemas/UrlKey"},
            "content": {"$ref": "#/components/schemas/ContentId"},
            "piece": {"type": "integer", "format": "uint32"},
            "reporter": {"type": "string", "description": "The reporting agent; required with a fleet token"},
            "reason": {"type": "string", "maxLength": 1024}}},
        "UrlReportAccepted": {"type": "object", "required": ["withdrawn"], "properties": {
            "withdrawn": {"type": "boolean"}}}
    })
}

/// The OpenAPI 3 document of every route the router serves, with the limits of `limits`.
pub fn document() -> Value {
    let agent_id = path_id("Agent id: 1 to 64 characters from A-Z a-z 0-9 . _ -");
    let content_id = path_id("Content id: 64 hex digits, BLAKE3 of the manifest");
    let swarm_id = path_id("Swarm id: 64 hex digits, from the swarm's URL key");
    let limit = query(
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": DEFAULT_LIST}),
        "Page size",
    );
    let digests_from = query(
        "digests_from",
        json!({"type": "integer", "minimum": 0}),
        "Leave out the digests of pieces before this index (a member that knows the earlier ones asks from its first missing digest; the piece count leaves out all)",
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "shoal tracker",
            "version": "1",
            "description": "Which agent holds which pieces of which content. Every /v1 route except this document needs `Authorization: Bearer <secret>`."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                "responses": {"200": {"description": "Serving", "content": {"text/plain": {}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {}}}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}}}}},
            "/v1/agents": {"get": {"summary": "List live agents in id order (reader, admin)",
                "parameters": [query("after", json!({"type": "string"}), "Start after this agent id"), limit.clone()],
                "responses": ok("200", "Agents", "AgentList", &errs(&["400"]))}},
            "/v1/agents/{id}": {
                "put": {"summary": "Register with the full holdings; starts or renews the lease (agent, admin)",
                    "parameters": [agent_id.clone()], "requestBody": body("RegisterRequest"),
                    "responses": ok("200", "Lease", "LeaseGrant", &errs(&["400", "409", "413"]))},
                "delete": {"summary": "Deregister at once (agent, admin)",
                    "parameters": [agent_id.clone()],
                    "responses": {
                        "204": {"description": "Forgotten"},
                        "401": error_responses(&["401"])["401"], "403": error_responses(&["403"])["403"],
                        "404": error_responses(&["404"])["404"], "429": error_responses(&["429"])["429"]}}},
            "/v1/agents/{id}/heartbeat": {"post": {"summary": "Renew the lease (agent, admin); 404 means register again",
                "parameters": [agent_id.clone()], "requestBody": body("HeartbeatRequest"),
                "responses": ok("200", "Lease", "LeaseGrant", &errs(&["400", "404", "413"]))}},
            "/v1/agents/{id}/announce": {"post": {"summary": "Announce a delta: removed, added or replaced holdings, new pieces (agent, admin)",
                "parameters": [agent_id], "requestBody": body("AnnounceRequest"),
                "responses": ok("200", "Lease", "LeaseGrant", &errs(&["400", "404", "413"]))}},
            "/v1/content": {"get": {"summary": "Search content by name substring or id prefix (reader, admin)",
                "parameters": [
                    query("name", json!({"type": "string"}), "Case-insensitive substring of the name"),
                    query("id", json!({"type": "string"}), "Hex prefix of the content id"),
                    limit],
                "responses": ok("200", "Matching content", "ContentList", &errs(&["400"]))}},
            "/v1/content/{id}": {"get": {"summary": "One content (all roles)",
                "parameters": [content_id.clone()],
                "responses": ok("200", "Content", "ContentSummary", &errs(&["400", "404"]))}},
            "/v1/content/{id}/peers": {"get": {"summary": "Up to k live holders: complete first, then most useful pieces, then least load (all roles)",
                "parameters": [content_id.clone(),
                    query("k", json!({"type": "integer", "minimum": 1, "maximum": MAX_PEERS, "default": DEFAULT_PEERS}), "How many peers"),
                    query("agent", json!({"type": "string"}), "The asking agent: never returned; its pieces decide usefulness")],
                "responses": ok("200", "Peers", "PeersResponse", &errs(&["400", "404"]))}},
            "/v1/content/{id}/manifest": {
                "put": {"summary": "Publish a manifest; the id must be its BLAKE3 (agent, admin)",
                    "parameters": [content_id.clone()], "requestBody": body("Manifest"),
                    "responses": {
                        "201": ok("201", "Stored", "ManifestPublished", &[])["201"],
                        "200": ok("200", "Already stored", "ManifestPublished", &[])["200"],
                        "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"],
                        "403": error_responses(&["403"])["403"], "413": error_responses(&["413"])["413"],
                        "429": error_responses(&["429"])["429"]}},
                "get": {"summary": "Fetch a manifest (all roles)",
                    "parameters": [content_id.clone()],
                    "responses": ok("200", "Manifest", "Manifest", &errs(&["400", "404"]))}},
            "/v1/content/{id}/reports": {"post": {"summary": "Report a peer that served a piece not matching its digest: on reports of two distinct agents (or one admin) it leaves peers answers for this content for 10 minutes (agent, admin)",
                "parameters": [content_id], "requestBody": body("ReportRequest"),
                "responses": ok("202", "Accepted (also when the agent does not hold the content)", "ReportAccepted", &errs(&["400", "404", "413"]))}},
            "/v1/urls": {
                "post": {"summary": "Map a URL version to a content whose manifest is published; the first mapping wins (agent, admin)",
                    "requestBody": body("PublishUrlRequest"),
                    "responses": {
                        "201": ok("201", "Mapped", "UrlMapping", &[])["201"],
                        "200": ok("200", "Already mapped (maybe to another content)", "UrlMapping", &[])["200"],
                        "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"],
                        "403": error_responses(&["403"])["403"], "404": error_responses(&["404"])["404"],
                        "413": error_responses(&["413"])["413"], "429": error_responses(&["429"])["429"]}},
                "get": {"summary": "Look up a URL version (all roles)",
                    "parameters": [
                        {"name": "url", "in": "query", "required": true, "schema": {"type": "string"}},
                        {"name": "size", "in": "query", "required": true, "schema": {"type": "integer"}},
                        query("etag", json!({"type": "string"}), "ETag the origin sent"),
                        query("last_modified", json!({"type": "string"}), "Last-Modified the origin sent")],
                    "responses": ok("200", "Mapping", "UrlMapping", &errs(&["400", "404"]))}},
            "/v1/urls/reports": {"post": {"summary": "Report a URL mapping whose content the origin disagrees with: reports of two distinct agents (or one admin) withdraw it (agent, admin)",
                "requestBody": body("UrlReportRequest"),
                "responses": ok("202", "Accepted (also when the URL version no longer maps to that content)", "UrlReportAccepted", &errs(&["400", "403", "413"]))}},
            "/v1/urls/latest": {"get": {"summary": "The most recently published version of a URL, whatever its size and validators, for when its origin does not answer (all roles)",
                "parameters": [{"name": "url", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": ok("200", "Mapping", "UrlMapping", &errs(&["400", "404"]))}},
            "/v1/swarms": {"post": {"summary": "Fetch a URL version together before its manifest exists: create its swarm, led by `agent`, or get the running one (agent, admin)",
                "requestBody": body("CreateSwarmRequest"),
                "responses": {
                    "201": ok("201", "Created; the caller's token alone may publish digests", "SwarmInfo", &[])["201"],
                    "200": ok("200", "Already running with this layout", "SwarmInfo", &[])["200"],
                    "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"],
                    "403": error_responses(&["403"])["403"], "409": error_responses(&["409"])["409"],
                    "413": error_responses(&["413"])["413"], "429": error_responses(&["429"])["429"],
                    "503": {"description": "The store is unreachable, or the tracker runs its maximum number of swarms.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}},
            "/v1/swarms/{id}": {"get": {"summary": "A running swarm and the digests known so far (all roles)",
                "parameters": [swarm_id.clone(), digests_from.clone()],
                "responses": ok("200", "Swarm", "SwarmInfo", &errs(&["400", "404"]))}},
            "/v1/swarms/{id}/digests": {"post": {"summary": "Publish piece digests; the first digest of a piece wins (the leading agent's token, admin)",
                "parameters": [swarm_id.clone(), digests_from], "requestBody": body("PublishDigestsRequest"),
                "responses": ok("200", "The swarm after the publish", "SwarmInfo", &errs(&["400", "404", "413"]))}},
            "/v1/swarms/{id}/leader": {"post": {"summary": "Take over leading a swarm whose leader is gone (lease lapsed) or stalled (no new digest for 5 s plus one piece at 16 Mbit/s while some are missing); the first caller wins, and its token alone publishes from then; digests published stay (agent, admin)",
                "parameters": [swarm_id], "requestBody": body("TakeOverRequest"),
                "responses": ok("200", "The swarm, led by `agent`", "SwarmInfo", &errs(&["400", "404", "409"]))}}
        }
    })
}
