;; Imports a host function the ABI does not have; loading it must fail.
(module
  (import "molt" "no_such_function" (func $nope (param i32)))
  (memory (export "memory") 1)
  (func (export "molt_main") (param $args_len i32)
    (call $nope (local.get $args_len)))
)
