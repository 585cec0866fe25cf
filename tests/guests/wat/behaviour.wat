;; wat-counter: a behaviour written against ABI.md only.
;;
;; Init arguments: the start value, a u64 LE (8 bytes). Messages:
;;   tag 0, 8-byte payload:  add the u64 LE to the counter;
;;   tag 7, 24-byte payload: send the counter (8 bytes, tag 0) to that pid;
;;   anything else is ignored.
;; Upgradeable: molt_state_save hands out the 8-byte counter, and
;; molt_code_change accepts an 8-byte state from any version.
;;
;; Memory: 0..8 the counter, 8..16 scratch, 16..40 a pid, 1024.. input.
(module
  (@custom "molt.module" "name=wat-counter\nversion=1.0.0\nabi=1\n")

  (import "molt" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "molt" "send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "exit_self" (func $exit_self (param i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 512) "badarg: wat-counter wants a u64")
  (data (i32.const 576) "wat-counter: state is not 8 bytes")

  (func (export "molt_init") (param $args_len i32)
    (if (i32.ne (local.get $args_len) (i32.const 8))
      (then
        (call $exit_self (i32.const 512) (i32.const 31))
        (unreachable)))
    (drop (call $msg_read (i32.const 0) (i32.const 8))))

  (func (export "molt_handle") (param $tag i32) (param $len i32)
    ;; tag 0, 8 bytes: add.
    (if (i32.and (i32.eqz (local.get $tag)) (i32.eq (local.get $len) (i32.const 8)))
      (then
        (drop (call $msg_read (i32.const 8) (i32.const 8)))
        (i64.store (i32.const 0)
          (i64.add (i64.load (i32.const 0)) (i64.load (i32.const 8))))
        (return)))
    ;; tag 7, 24 bytes: reply with the counter.
    (if (i32.and (i32.eq (local.get $tag) (i32.const 7)) (i32.eq (local.get $len) (i32.const 24)))
      (then
        (drop (call $msg_read (i32.const 16) (i32.const 24)))
        (drop (call $send (i32.const 16) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 8))))))

  ;; (len << 32) | ptr: 8 bytes at address 0.
  (func (export "molt_state_save") (result i64)
    (i64.const 0x8_0000_0000))

  ;; Input: from_version_len u32 LE, the version, then the state. Returns 0,
  ;; or (len << 32) | ptr of the reason it refuses: 33 bytes at 576.
  (func (export "molt_code_change") (param $input_len i32) (result i64)
    (local $state i32)
    (if (i32.gt_u (local.get $input_len) (i32.const 1024))
      (then (return (i64.const 0x21_0000_0240))))
    (drop (call $msg_read (i32.const 1024) (local.get $input_len)))
    ;; The state starts after the length word and the version.
    (local.set $state (i32.add (i32.const 1028) (i32.load (i32.const 1024))))
    (if (i32.ne (i32.sub (i32.add (i32.const 1024) (local.get $input_len)) (local.get $state)) (i32.const 8))
      (then (return (i64.const 0x21_0000_0240))))
    (i64.store (i32.const 0) (i64.load (local.get $state)))
    (i64.const 0))
)
