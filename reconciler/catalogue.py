"""The one catalogue of error codes.

Every problem the reconciler reports, on the command line, in a commit status or as an HTTP
problem document, carries one of these codes. A code never changes meaning once released: add a
new one rather than reuse an old number. Ranges follow the flow of a commit:

    RCN-1xxx  input: YAML, Score files, reconciler.yaml, placeholders
    RCN-2xxx  planning
    RCN-3xxx  execution and drivers
    RCN-4xxx  Git and status reporting
    RCN-5xxx  store
    RCN-6xxx  API and authentication

``docs/errors.md`` has a section per code; ``tests/unit/test_catalogue.py`` keeps the two in step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DOCS_URL = "https://github.com/score-reconciler/score-reconciler/blob/main/docs/errors.md"


@dataclass(frozen=True, slots=True)
class Entry:
    number: int
    title: str
    hint: str


class Code(enum.Enum):
    """Error codes; the member name is for code, the ``id`` (``RCN-1001``) is for users."""

    # -- 10xx: reading a file ------------------------------------------------------------------
    YAML_SYNTAX = Entry(1001, "YAML syntax error", "Fix the YAML syntax at the position shown.")
    NOT_A_MAPPING = Entry(
        1002,
        "document is not a mapping",
        "The top level of the file must be a mapping of keys to values (key: value).",
    )
    MULTIPLE_DOCUMENTS = Entry(
        1003,
        "more than one YAML document",
        "Keep one document per file: remove the '---' separators or split the file.",
    )
    INVALID_ENCODING = Entry(
        1004, "file is not valid UTF-8", "Save the file as UTF-8 (without a byte-order mark)."
    )
    EMPTY_DOCUMENT = Entry(
        1005, "file is empty", "Add the document's content, or delete the file if it is unused."
    )
    FILE_TOO_LARGE = Entry(
        1006,
        "file is too large",
        "Score and configuration files are small; split the file or move data out of it.",
    )
    YAML_TOO_COMPLEX = Entry(
        1007,
        "YAML document is too deeply nested or expands too far",
        "Remove deep nesting and repeated alias expansion (a 'billion laughs' pattern).",
    )
    DUPLICATE_KEY = Entry(
        1008,
        "duplicate key in mapping",
        "Each key may appear once in a mapping; remove or rename the repeated key.",
    )
    UNSUPPORTED_KEY = Entry(
        1009,
        "mapping key is not a plain value",
        "Use a plain string as the key; complex (mapping or sequence) keys are not supported.",
    )
    UNREADABLE_FILE = Entry(
        1010,
        "file cannot be read",
        "Check that the path exists and that the reconciler may read it.",
    )

    # -- 11xx: schema --------------------------------------------------------------------------
    UNKNOWN_FIELD = Entry(
        1101, "unknown field", "Remove the field, or correct its spelling to a known one."
    )
    MISSING_FIELD = Entry(1102, "required field is missing", "Add the required field.")
    WRONG_TYPE = Entry(1103, "value has the wrong type", "Change the value to the expected type.")
    INVALID_FORMAT = Entry(
        1104, "value does not match the required format", "Change the value to the format shown."
    )
    NOT_ALLOWED_VALUE = Entry(
        1105, "value is not one of the allowed values", "Use one of the allowed values."
    )
    OUT_OF_RANGE = Entry(
        1106,
        "value is out of range",
        "Change the value so that it lies within the bounds shown.",
    )
    INVALID_NAME = Entry(
        1107,
        "name is not allowed",
        "Names are RFC 1123 labels: 2 to 63 characters of a-z, 0-9 and '-', "
        "starting and ending with a letter or digit.",
    )
    FILE_CONTENT_CHOICE = Entry(
        1108,
        "file needs exactly one of content, binaryContent or source",
        "Give the file exactly one of 'content', 'binaryContent' or 'source'.",
    )
    PROBE_WITHOUT_HANDLER = Entry(
        1109,
        "probe needs httpGet or exec",
        "Give the probe an 'httpGet' or an 'exec' section (exec is preferred).",
    )
    UNSUPPORTED_API_VERSION = Entry(
        1110,
        "unsupported apiVersion",
        "Set 'apiVersion: score.dev/v1b1', the Score version this reconciler implements.",
    )
    SCHEMA_VIOLATION = Entry(
        1199,
        "document does not match the schema",
        "Compare the document with the schema in specs/.",
    )

    # -- 12xx: placeholders --------------------------------------------------------------------
    PLACEHOLDER_UNKNOWN_ROOT = Entry(
        1201,
        "placeholder has an unknown root",
        "Placeholders start with 'metadata.' or 'resources.'; write '$$' for a literal '$'.",
    )
    PLACEHOLDER_UNKNOWN_RESOURCE = Entry(
        1202,
        "placeholder names a resource that is not declared",
        "Declare the resource under 'resources', or correct the name in the placeholder.",
    )
    PLACEHOLDER_MISSING_KEY = Entry(
        1203,
        "placeholder key not found",
        "Use a key that exists, or add it to the workload's metadata.",
    )
    PLACEHOLDER_NEEDS_KEY = Entry(
        1204,
        "placeholder needs a key to look up",
        "Name a key after the root, for example '${metadata.name}'.",
    )
    PLACEHOLDER_NOT_A_MAP = Entry(
        1205,
        "placeholder walks into a value that is not a mapping",
        "Stop the placeholder at the value, or point it at a mapping.",
    )

    # -- 13xx: workload semantics --------------------------------------------------------------
    DUPLICATE_WORKLOAD = Entry(
        1301,
        "workload name is used more than once",
        "Workload names are unique within a repository; rename one of the workloads.",
    )
    FILE_SOURCE_ESCAPES = Entry(
        1302,
        "file source points outside the repository",
        "Keep file sources inside the repository, as a path relative to the Score file.",
    )
    FILE_SOURCE_MISSING = Entry(
        1303,
        "file source does not exist",
        "Create the file, or correct the path (relative to the Score file).",
    )
    BEFORE_CYCLE = Entry(
        1304,
        "containers wait on each other in a cycle",
        "Remove one of the 'before' entries so that the containers can start in some order.",
    )
    BEFORE_UNKNOWN_CONTAINER = Entry(
        1305,
        "'before' names a container that does not exist",
        "Name a container of the same workload.",
    )
    DEPRECATED_LIST_FORM = Entry(
        1306,
        "deprecated list form",
        "Write files and volumes as a map keyed by the target path.",
    )
    FILE_SOURCE_UNREADABLE = Entry(
        1307,
        "file source cannot be read as text",
        "Use 'binaryContent' for binary data, or set 'noExpand: true'.",
    )
    VOLUME_SOURCE_UNKNOWN = Entry(
        1308,
        "volume source is not a declared resource",
        "Write the source as '${resources.NAME}' naming a declared volume resource.",
    )

    # -- 14xx: reconciler.yaml -----------------------------------------------------------------
    CONFIG_MISSING_FILE = Entry(
        1402,
        "file named in reconciler.yaml does not exist",
        "Create the file or correct the path (relative to the repository root).",
    )
    CONFIG_INVALID_GLOB = Entry(
        1403,
        "glob pattern is not valid",
        "Use a relative glob such as 'apps/**/score.yaml'.",
    )
    NO_SCORE_FILES = Entry(
        1404,
        "no Score files found",
        "Check the 'workloads' globs in reconciler.yaml, or the paths given on the command line.",
    )
    CONFIG_BRANCH_AND_REF = Entry(
        1405,
        "environment names both a branch and a ref",
        "Give an environment either 'branch' or 'ref', not both.",
    )

    CONFIG_BRANCH_CONFLICT = Entry(
        1406,
        "a branch the reconciler writes collides with another",
        "Deploy branches, the status branch and the branches environments follow must all differ, "
        "or the reconciler would reconcile its own commits.",
    )
    CONFIG_INVALID_VALUE = Entry(
        1407,
        "configuration value is not valid",
        "Change the value as the message says; docs/configuration.md lists every key.",
    )

    # -- 2xxx: planning ------------------------------------------------------------------------
    NO_PROVISIONER = Entry(
        2001,
        "no provisioner supports this resource",
        "Add a provisioner for the resource's type (and class) to a file listed under "
        "'provisioners' in reconciler.yaml, or use a type the built-in provisioners support.",
    )
    SHARED_RESOURCE_CONFLICT = Entry(
        2002,
        "a shared resource is declared with different params or metadata",
        "Workloads sharing a resource (same type, class and id) must declare the same params; "
        "declare them in one workload only, or make them equal.",
    )
    RESOURCE_CYCLE = Entry(
        2003,
        "resources refer to each other in a cycle",
        "Remove one of the ${resources...} references in the params of the resources named.",
    )
    PROVISIONER_INVALID = Entry(
        2004,
        "provisioner definition is not valid",
        "Fix the provisioner file as the message says; docs/provisioners.md lists every key.",
    )
    PROVISIONER_TEMPLATE_ERROR = Entry(
        2005,
        "provisioner template failed",
        "Fix the Jinja2 template in the provisioner named, or the params it reads.",
    )
    UNKNOWN_ENVIRONMENT = Entry(
        2006,
        "environment is not defined",
        "Use an environment defined in reconciler.yaml (reconciler status lists them).",
    )
    PROVISIONER_CHANGED = Entry(
        2007,
        "resource was provisioned by a different provisioner",
        "A resource keeps its provisioner; destroy it first, or give it a new id or class.",
    )
    UNSUPPORTED_PARAM = Entry(
        2008,
        "resource param is not supported by its provisioner",
        "Use only the params the provisioner lists in supported_params.",
    )

    # -- 3xxx: execution and drivers -----------------------------------------------------------
    STEP_FAILED = Entry(
        3001,
        "step failed",
        "Read the step's message and log (reconciler run-show RUN); fix the cause and apply again.",
    )
    STEP_TIMEOUT = Entry(
        3002,
        "step timed out",
        "Raise the step's timeout in reconciler.yaml, or find out why the driver is slow.",
    )
    RETRIES_EXHAUSTED = Entry(
        3003,
        "step failed after every retry",
        "The error kept coming back; fix its cause, then apply again to resume the run.",
    )
    DEPENDENCY_FAILED = Entry(
        3004,
        "step skipped because a step it depends on failed",
        "Fix the failed step it depends on; this one runs when that succeeds.",
    )
    RUN_INTERRUPTED = Entry(
        3005,
        "run was interrupted",
        "Apply again: finished steps are kept and the run resumes where it stopped.",
    )
    CMD_PROVISIONER_FAILED = Entry(
        3006,
        "cmd provisioner exited with an error",
        "Run the provisioner by hand with the same JSON on stdin and read its stderr.",
    )
    CMD_PROVISIONER_TIMEOUT = Entry(
        3007,
        "cmd provisioner timed out",
        "Make the provisioner finish sooner, or raise its timeout.",
    )
    CMD_PROVISIONER_BAD_OUTPUT = Entry(
        3008,
        "cmd provisioner printed output that is not the expected JSON",
        "Print one JSON object with resource_state, resource_outputs and shared_state only.",
    )
    POSTGRES_DRIVER_FAILED = Entry(
        3009,
        "PostgreSQL provisioning failed",
        "Check the admin connection (RECONCILER_POSTGRES_URL) and its rights to create "
        "databases and roles.",
    )
    SECRET_STORE_FAILED = Entry(
        3010,
        "secret store failed",
        "Check the Vault address and token, or the encryption key of the built-in secret store.",
    )
    SECRET_KEY_MISSING = Entry(
        3011,
        "no key to encrypt secrets with",
        "Set RECONCILER_SECRET_KEY (or RECONCILER_SECRET_KEY_FILE), or configure Vault.",
    )
    MANIFEST_RENDER_FAILED = Entry(
        3012,
        "manifests could not be rendered",
        "Fix the workload or provisioner named in the message.",
    )
    KUBERNETES_API_FAILED = Entry(
        3013,
        "Kubernetes API request failed",
        "Check the cluster address, credentials and the reconciler's RBAC rights.",
    )
    ROLLBACK_FAILED = Entry(
        3014,
        "rollback could not undo every step",
        "Inspect the run (reconciler run-show RUN) and remove what is left by hand.",
    )
    RUN_NOT_FOUND = Entry(
        3015,
        "run not found",
        "List runs with 'reconciler runs' and use one of their ids.",
    )
    RUN_NOT_WAITING = Entry(
        3016,
        "run is not waiting for approval",
        "Only a run in WaitingApproval can be approved or rejected.",
    )
    RECONCILE_CRASHED = Entry(
        3017,
        "reconcile stopped by an unexpected error",
        "The daemon logged the error with its traceback and retries with backoff; report it "
        "with that log if it persists.",
    )

    WORKFLOW_NOT_FOUND = Entry(
        3050, "workflow not found", "List workflows with 'reconciler workflow list'."
    )
    WORKFLOW_PARAM_UNKNOWN = Entry(
        3051, "unknown workflow parameter", "Use a parameter the workflow declares."
    )
    WORKFLOW_PARAM_MISSING = Entry(
        3052, "required workflow parameter missing", "Give it with --param NAME=VALUE."
    )
    WORKFLOW_PARAM_INVALID = Entry(
        3053,
        "workflow parameter value is not valid",
        "Give a value of the parameter's type within its bounds.",
    )
    WORKFLOW_TEMPLATE_FAILED = Entry(
        3054,
        "workflow template failed to render",
        "Check the names the template uses (params, steps.<id>.outputs, item).",
    )
    WORKFLOW_SHELL_FAILED = Entry(
        3055, "workflow command exited with an error", "Read the step's log for its output."
    )
    WORKFLOW_OUTPUTS_INVALID = Entry(
        3056,
        "workflow step outputs are missing or not valid",
        "Write a JSON object, or key=value lines, to the outputs file the step names.",
    )
    WORKFLOW_HTTP_FAILED = Entry(
        3057,
        "workflow request failed or answered an unexpected status",
        "Check the URL and the 'expect' list of the step.",
    )
    WORKFLOW_ACTION_UNAVAILABLE = Entry(
        3058,
        "workflow step cannot run here",
        "provision and apply steps need a repository and a store; run the workflow with them.",
    )
    WORKFLOW_HOOK_FAILED = Entry(
        3059,
        "a hook workflow failed",
        "Read the hook's steps in 'reconciler run-show RUN'; the apply did not go on.",
    )

    # -- 4xxx: Git and status reporting --------------------------------------------------------
    REPOSITORY_NOT_FOUND = Entry(
        4001,
        "Git repository not found",
        "Point --repo at a Git repository (a work tree or a bare repository).",
    )
    REVISION_NOT_FOUND = Entry(
        4002,
        "revision not found",
        "Use a branch, tag or commit that exists in the repository (git rev-parse REV).",
    )
    GIT_READ_FAILED = Entry(
        4003,
        "reading from the Git repository failed",
        "Check that the repository is not corrupt (git fsck) and readable.",
    )
    DEPLOY_BRANCH_WRITE_FAILED = Entry(
        4005,
        "writing the deploy branch failed",
        "Check that the deploy repository is writable and the branch is not protected.",
    )
    NOTES_WRITE_FAILED = Entry(
        4006, "writing the Git note failed", "Check that the repository is writable."
    )
    NOTES_PUSH_FAILED = Entry(
        4007,
        "pushing the notes failed",
        "Check the remote URL and credentials, and that refs/notes/* may be pushed.",
    )
    STATUS_BRANCH_WRITE_FAILED = Entry(
        4008,
        "writing the status branch failed",
        "Check that the repository is writable and the status branch is not checked out.",
    )
    FORGE_REJECTED = Entry(
        4009,
        "the forge rejected the commit status",
        "Check the token's rights and reporters.forge.repository in reconciler.yaml.",
    )
    FORGE_UNAVAILABLE = Entry(
        4010,
        "the forge could not be reached",
        "The forge is down or rate-limiting; statuses are retried, then dropped.",
    )
    FORGE_TOKEN_MISSING = Entry(
        4011,
        "the forge token is not set",
        "Set the environment variable named by reporters.forge.token_env.",
    )
    REPORT_DROPPED = Entry(
        4012,
        "a status report was dropped",
        "The reconciler stopped or its queue overflowed before the status was sent.",
    )
    REMOTE_UNREACHABLE = Entry(
        4013,
        "fetching from the remote failed",
        "Check the remote URL, the network and the credentials; the fetch is retried.",
    )
    MIRROR_PATH_INVALID = Entry(
        4014,
        "the mirror folder is not a bare repository",
        "Point the reconciler at an empty folder or at the bare mirror it made before.",
    )
    WATCH_FAILED = Entry(
        4015,
        "watching the repository's refs failed",
        "Check file-system watch limits (fs.inotify.max_user_watches); the daemon falls back "
        "to polling.",
    )
    BRANCH_FORCE_PUSHED = Entry(
        4016,
        "a followed branch was force-pushed",
        "The new head does not descend from the reconciled one; it is applied as any commit.",
    )
    BRANCH_PUSH_FAILED = Entry(
        4017,
        "pushing a branch the reconciler writes failed",
        "Check the remote URL and credentials, and that reconciler/* branches may be pushed "
        "(not protected); the push is retried.",
    )
    SYMLINK_ESCAPES = Entry(
        4004,
        "symbolic link points outside the repository",
        "Replace the link with a file, or point it inside the repository.",
    )

    # -- 5xxx: store ---------------------------------------------------------------------------
    STORE_UNREACHABLE = Entry(
        5001,
        "state store cannot be reached",
        "Check the --store URL (or RECONCILER_STORE) and that the database is running.",
    )
    STORE_MIGRATION_FAILED = Entry(
        5002,
        "state store schema could not be migrated",
        "Check the database user's rights; 'reconciler db current' shows the schema version.",
    )
    STORE_URL_INVALID = Entry(
        5003,
        "state store URL is not supported",
        "Use sqlite:///path/state.db or postgresql://user@host:port/db.",
    )
    STORE_READ_ONLY = Entry(
        5004,
        "state store is read-only or full",
        "Make the database file and its folder writable and check the free disk space.",
    )
    STORE_NEWER_SCHEMA = Entry(
        5005,
        "state store was written by a newer reconciler",
        "Upgrade the reconciler; it will not downgrade a store's schema.",
    )
    BACKUP_INVALID = Entry(
        5006,
        "backup file is not valid",
        "Restore from a file written by 'reconciler db backup'.",
    )

    STORE_BUSY = Entry(
        5007,
        "state store is busy: another writer held its lock too long",
        "Another process kept SQLite's write lock past the busy timeout; the work is retried. "
        "Several writers (replicas, or the CLI beside a busy daemon) are better served by "
        "PostgreSQL.",
    )

    LEASE_LOST = Entry(
        5010,
        "a replica lost its lease on a workload or environment",
        "Another replica took over after this one stopped renewing; check the store's latency.",
    )
    ENVIRONMENT_LOCKED = Entry(
        5011,
        "environment is being reconciled by another process",
        "Wait for the daemon's run (or the other command) to finish, or pass --lock-timeout to "
        "wait for it; the message names the holder (host-pid).",
    )

    # -- 6xxx: API and authentication ---------------------------------------------------------
    WEBHOOK_SIGNATURE_INVALID = Entry(
        6001,
        "webhook signature is missing or does not match",
        "Give the forge's webhook the same secret as the reconciler's configuration.",
    )
    WEBHOOK_PAYLOAD_INVALID = Entry(
        6002,
        "webhook payload is not valid",
        "Set the webhook's content type to application/json and send push or pull request events.",
    )
    WEBHOOK_NOT_CONFIGURED = Entry(
        6003,
        "webhook is not configured for this forge",
        "Set a webhook secret for the forge in the reconciler's configuration.",
    )
    REQUEST_TOO_LARGE = Entry(
        6004,
        "request is too large",
        "Webhook bodies are limited to 1 MiB; keep request lines and headers short.",
    )
    ENDPOINT_NOT_FOUND = Entry(
        6005,
        "no such endpoint",
        "docs/api.md lists the endpoints the reconciler serves.",
    )
    METHOD_NOT_ALLOWED = Entry(
        6006,
        "method not allowed",
        "Use one of the methods listed in the Allow header.",
    )
    BAD_REQUEST = Entry(
        6007,
        "request is malformed",
        "Send a well-formed HTTP/1.1 request; a body needs a Content-Length header.",
    )
    NOT_READY = Entry(
        6008,
        "reconciler is not ready",
        "Fix the failing checks listed in 'errors'; the daemon keeps checking.",
    )
    INTERNAL_ERROR = Entry(
        6009,
        "internal error",
        "Look up the request in the reconciler's log and report the error if it persists.",
    )

    WORKFLOW_INVALID = Entry(
        1450,
        "workflow definition is not valid",
        "Fix the workflow file as the message says; docs/workflows.md lists every key.",
    )
    WORKFLOW_DUPLICATE_STEP = Entry(
        1451, "step id is used more than once", "Give every step of a workflow its own id."
    )
    WORKFLOW_UNKNOWN_NEED = Entry(
        1452, "step needs an unknown step", "Name a step of the same workflow in 'needs'."
    )
    WORKFLOW_NEEDS_CYCLE = Entry(
        1453,
        "steps need each other in a cycle",
        "Remove one of the 'needs' entries so that the steps can run in some order.",
    )
    WORKFLOW_TEMPLATE_SYNTAX = Entry(
        1454,
        "workflow template does not parse",
        "Fix the Jinja2 syntax at the position shown.",
    )
    WORKFLOW_DUPLICATE_NAME = Entry(
        1455,
        "workflow name is used more than once",
        "Workflow names are unique across the repository's workflow files; rename one.",
    )

    # -- 19xx: command line --------------------------------------------------------------------
    PATH_NOT_FOUND = Entry(1901, "path does not exist", "Check the path given on the command line.")

    @property
    def id(self) -> str:
        return f"RCN-{self.value.number:04d}"

    @property
    def title(self) -> str:
        return self.value.title

    @property
    def hint(self) -> str:
        return self.value.hint

    @property
    def anchor(self) -> str:
        return f"rcn-{self.value.number:04d}"

    @property
    def docs_url(self) -> str:
        return f"{DOCS_URL}#{self.anchor}"


def by_id(code_id: str) -> Code:
    """Look a code up by its user-facing id (``RCN-1001``)."""
    for code in Code:
        if code.id == code_id:
            return code
    raise KeyError(code_id)
