;; Neither molt_handle nor molt_main: not a molt module; loading it must fail.
(module
  (import "molt" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "hello")
    (call $log (i32.const 3) (i32.const 0) (i32.const 0)))
)
