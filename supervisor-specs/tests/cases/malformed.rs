// Malformed specs, each with the place of its first problem and words its message must
// hold. Included by `supervisor-specs/tests/format.rs` (read alone) and `cli/tests/specs.rs`
// (applied to a live cluster, which must stay unchanged).

/// A malformed spec: what is wrong, its text, the line and column of its (first) problem,
/// and words the message must hold.
type Case = (
    &'static str,
    &'static str,
    (usize, usize),
    &'static [&'static str],
);

/// Each malformed spec.
const MALFORMED: &[Case] = &[
    (
        "unknown top key, with a hint",
        "name = \"s\"\nstrategie = \"one_for_all\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 1),
        &["unknown key `strategie`", "did you mean `strategy`"],
    ),
    (
        "unknown child key, with a hint",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nargz = [\"x\"]\n",
        (5, 1),
        &["unknown key `argz`", "did you mean `args`"],
    ),
    (
        "unknown strategy",
        "name = \"s\"\nstrategy = \"one_for_everyone\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 12),
        &[
            "unknown strategy \"one_for_everyone\"",
            "one_for_one, one_for_all, rest_for_one",
        ],
    ),
    (
        "simple_one_for_one is not for specs",
        "name = \"s\"\nstrategy = \"simple_one_for_one\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 12),
        &["simple_one_for_one", "process service"],
    ),
    (
        "duplicate id",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n[[children]]\nid = \"a\"\ncommand = \"false\"\n",
        (6, 6),
        &["duplicate child id \"a\""],
    ),
    (
        "a replica's id taken by a sibling",
        "name = \"s\"\n[[children]]\nid = \"w\"\ncommand = \"true\"\nreplicas = 2\n[[children]]\nid = \"w-1\"\ncommand = \"true\"\n",
        (7, 6),
        &["duplicate child id \"w-1\""],
    ),
    (
        "wrong type of intensity",
        "name = \"s\"\nintensity = \"three\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 13),
        &["`intensity` of the spec must be a whole number, not string"],
    ),
    (
        "negative intensity",
        "name = \"s\"\nintensity = -1\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 13),
        &["`intensity`", "from 0 to"],
    ),
    (
        "bad period",
        "name = \"s\"\nperiod = \"5 seconds\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (2, 10),
        &["`period` of the spec", "not a duration"],
    ),
    (
        "no name",
        "[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (1, 1),
        &["the spec has no `name`"],
    ),
    (
        "bad name",
        "name = \"my spec!\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\n",
        (1, 8),
        &["`name` \"my spec!\"", "letters, digits"],
    ),
    (
        "no children",
        "name = \"s\"\n",
        (1, 1),
        &["has no `children`"],
    ),
    (
        "a child that is neither",
        "name = \"s\"\n[[children]]\nid = \"a\"\n",
        (2, 1),
        &["neither `command`", "nor `children`"],
    ),
    (
        "a child that is both",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nchildren = []\n",
        (4, 1),
        &["both `command`", "and `children`"],
    ),
    (
        "args not strings",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"sleep\"\nargs = [1]\n",
        (5, 9),
        &["`args` of child \"a\" must hold strings only, not a integer"],
    ),
    (
        "bad placement expression",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nplacement = [\"rack r1\"]\n",
        (5, 14),
        &["bad placement of child \"a\"", "KEY = VALUE"],
    ),
    (
        "unknown restart type",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nrestart = \"always\"\n",
        (5, 11),
        &[
            "unknown restart \"always\"",
            "permanent, transient, temporary",
        ],
    ),
    (
        "bad shutdown",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nshutdown = \"soon\"\n",
        (5, 12),
        &["`shutdown` of child \"a\"", "brutal_kill"],
    ),
    (
        "zero cpus",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nresources = { cpus = 0 }\n",
        (5, 22),
        &["`cpus` of the resources of child \"a\"", "more than 0"],
    ),
    (
        "unknown resource, with a hint",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nresources = { memory = 64 }\n",
        (5, 15),
        &["unknown key `memory`", "did you mean `mem`"],
    ),
    (
        "too many replicas",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nreplicas = 5000\n",
        (5, 12),
        &["`replicas`", "from 1 to 1000"],
    ),
    (
        "significant under auto_shutdown never",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nsignificant = true\n",
        (5, 15),
        &["significant", "auto_shutdown", "never"],
    ),
    (
        "agent and placement both",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nagent = \"a1\"\nplacement = [\"rack = r1\"]\n",
        (5, 1),
        &["both `agent` and `placement`"],
    ),
    (
        "env not strings",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"true\"\nenv = { DEBUG = 1 }\n",
        (5, 17),
        &["`env.DEBUG` of child \"a\" must be a string"],
    ),
    (
        "nested supervisor with an unknown key",
        "name = \"s\"\n[[children]]\nid = \"db\"\nstrategy = \"rest_for_one\"\nintensty = 2\n[[children.children]]\nid = \"p\"\ncommand = \"true\"\n",
        (5, 1),
        &[
            "unknown key `intensty` in child \"db\"",
            "did you mean `intensity`",
        ],
    ),
    (
        "a TOML syntax error",
        "name = \"s\n[[children]]\n",
        (1, 10),
        &["string"],
    ),
    (
        "empty command",
        "name = \"s\"\n[[children]]\nid = \"a\"\ncommand = \"\"\n",
        (4, 11),
        &["`command` of child \"a\" is empty"],
    ),
];
