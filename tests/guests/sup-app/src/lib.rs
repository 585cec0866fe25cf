//! `sup-app`: an application's entry, a raw process that runs a `sup-tree`
//! supervision tree with `molt_sdk::supervisor::run` and exits when the
//! tree ends: `normal` if it ended `normal` or `shutdown`, else with its
//! reason.

use sup_tree::TreeArgs;

fn app(tree: TreeArgs) -> Result<(), String> {
    molt_sdk::supervisor::run("sup-tree", &tree)
}

molt_sdk::main!(app);
