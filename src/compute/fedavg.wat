(module
  (memory (export "memory") 1)
  ;; out[i] = (first ? 0 : out[i]) + wa*a[i] + wb*b[i] + wc*c[i] + wd*d[i], for i in [0, n), n a multiple of 4.
  ;; All pointers are byte offsets into this module's memory.
  (func (export "acc4") (param $out i32) (param $a i32) (param $b i32) (param $c i32) (param $d i32)
        (param $n i32) (param $wa f32) (param $wb f32) (param $wc f32) (param $wd f32) (param $first i32)
    (local $i i32) (local $end i32) (local $va v128) (local $vb v128) (local $vc v128) (local $vd v128) (local $acc v128)
    (local.set $va (f32x4.splat (local.get $wa)))
    (local.set $vb (f32x4.splat (local.get $wb)))
    (local.set $vc (f32x4.splat (local.get $wc)))
    (local.set $vd (f32x4.splat (local.get $wd)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $acc
          (if (result v128) (local.get $first)
            (then (v128.const i32x4 0 0 0 0))
            (else (v128.load (i32.add (local.get $out) (local.get $i))))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load (i32.add (local.get $a) (local.get $i))) (local.get $va))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load (i32.add (local.get $b) (local.get $i))) (local.get $vb))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load (i32.add (local.get $c) (local.get $i))) (local.get $vc))))
        (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load (i32.add (local.get $d) (local.get $i))) (local.get $vd))))
        (v128.store (i32.add (local.get $out) (local.get $i)) (local.get $acc))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop))))
)
