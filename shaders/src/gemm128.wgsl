// Prefill product in 128-row x 128-token tiles: the contract of gemm.wgsl (prepended for its
// `store`), for batches large enough to fill them. Each thread adds an 8-row x 8-token block
// (rows 4·cr.. and 64 + 4·cr.., tokens 4·ct.. and 64 + 4·ct..): four 16-byte shared-memory
// reads per 64 FMAs, twice gemm.wgsl's ratio, and each weight and activation loaded from
// memory feeds twice as many products. Every output adds its products in k order, one FMA
// each, as gemm.wgsl does, so both tiles give the same bits. Needs 32 KiB of workgroup memory.
//
// The loads of step k0 + KS are issued before step k0's products (registers hold them while
// the products run), and context.rs writes the 32 products of a step out at the KK_STEPS marker as
// straight-line code: no branch separates them from the loads, so the compiler can schedule
// them into the loads' latency. Rows past the end read row 0 and tokens past the end the last
// token; their outputs are never stored.

// [kk][row / 4] and [kk][token / 4]: four rows (tokens) per vector.
var<workgroup> ws2: array<vec4<f32>, KS * 128u / 4u>;
var<workgroup> xs2: array<vec4<f32>, KS * 128u / 4u>;

@compute @workgroup_size(WG)
fn main128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r0 = (wid.x + wid.y * nwg.x) * 128u;
    let t0 = wid.z * 128u;
    // Loading: row (token) li / 2 of the tile, sixteen values 16·(li % 2).. of the step.
    let lr = li / 2u;
    let lh = li % 2u;
    let wrow = r0 + lr;
    let rb = select(0u, wrow, wrow < p.n_rows) * p.row_bytes;
    let xt = min(t0 + lr, batch.n_tok - 1u);
    let k4 = p.k / 4u;
    let slot = lr / 4u;
    let lane = lr % 4u;
    let kb = 16u * lh;
    // Computing: aB_T is rows 4·cr + 64·B + e (the vector's lanes), token 4·ct + 64·(T / 4) + T % 4.
    let cr = li % 16u;
    let ct = li / 16u;
    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    var a0_4 = vec4<f32>(0.0);
    var a0_5 = vec4<f32>(0.0);
    var a0_6 = vec4<f32>(0.0);
    var a0_7 = vec4<f32>(0.0);
    var a1_0 = vec4<f32>(0.0);
    var a1_1 = vec4<f32>(0.0);
    var a1_2 = vec4<f32>(0.0);
    var a1_3 = vec4<f32>(0.0);
    var a1_4 = vec4<f32>(0.0);
    var a1_5 = vec4<f32>(0.0);
    var a1_6 = vec4<f32>(0.0);
    var a1_7 = vec4<f32>(0.0);

    var wa = load8(rb, 2u * lh);
    var wb = load8(rb, 2u * lh + 1u);
    var xv0 = x[xt * k4 + 4u * lh];
    var xv1 = x[xt * k4 + 4u * lh + 1u];
    var xv2 = x[xt * k4 + 4u * lh + 2u];
    var xv3 = x[xt * k4 + 4u * lh + 3u];
    for (var k0 = 0u; k0 < p.k; k0 += KS) {
        ws2[(kb + 0u) * 32u + slot][lane] = wa.a[0];
        ws2[(kb + 1u) * 32u + slot][lane] = wa.a[1];
        ws2[(kb + 2u) * 32u + slot][lane] = wa.a[2];
        ws2[(kb + 3u) * 32u + slot][lane] = wa.a[3];
        ws2[(kb + 4u) * 32u + slot][lane] = wa.b[0];
        ws2[(kb + 5u) * 32u + slot][lane] = wa.b[1];
        ws2[(kb + 6u) * 32u + slot][lane] = wa.b[2];
        ws2[(kb + 7u) * 32u + slot][lane] = wa.b[3];
        ws2[(kb + 8u) * 32u + slot][lane] = wb.a[0];
        ws2[(kb + 9u) * 32u + slot][lane] = wb.a[1];
        ws2[(kb + 10u) * 32u + slot][lane] = wb.a[2];
        ws2[(kb + 11u) * 32u + slot][lane] = wb.a[3];
        ws2[(kb + 12u) * 32u + slot][lane] = wb.b[0];
        ws2[(kb + 13u) * 32u + slot][lane] = wb.b[1];
        ws2[(kb + 14u) * 32u + slot][lane] = wb.b[2];
        ws2[(kb + 15u) * 32u + slot][lane] = wb.b[3];
        xs2[(kb + 0u) * 32u + slot][lane] = xv0[0];
        xs2[(kb + 1u) * 32u + slot][lane] = xv0[1];
        xs2[(kb + 2u) * 32u + slot][lane] = xv0[2];
        xs2[(kb + 3u) * 32u + slot][lane] = xv0[3];
        xs2[(kb + 4u) * 32u + slot][lane] = xv1[0];
        xs2[(kb + 5u) * 32u + slot][lane] = xv1[1];
        xs2[(kb + 6u) * 32u + slot][lane] = xv1[2];
        xs2[(kb + 7u) * 32u + slot][lane] = xv1[3];
        xs2[(kb + 8u) * 32u + slot][lane] = xv2[0];
        xs2[(kb + 9u) * 32u + slot][lane] = xv2[1];
        xs2[(kb + 10u) * 32u + slot][lane] = xv2[2];
        xs2[(kb + 11u) * 32u + slot][lane] = xv2[3];
        xs2[(kb + 12u) * 32u + slot][lane] = xv3[0];
        xs2[(kb + 13u) * 32u + slot][lane] = xv3[1];
        xs2[(kb + 14u) * 32u + slot][lane] = xv3[2];
        xs2[(kb + 15u) * 32u + slot][lane] = xv3[3];
        workgroupBarrier();
        // The next step's loads (the last step loads itself again).
        let kn = min(k0 + KS, p.k - KS);
        wa = load8(rb, kn / 8u + 2u * lh);
        wb = load8(rb, kn / 8u + 2u * lh + 1u);
        let xn = xt * k4 + (kn + kb) / 4u;
        xv0 = x[xn];
        xv1 = x[xn + 1u];
        xv2 = x[xn + 2u];
        xv3 = x[xn + 3u];
//KK_STEPS
        workgroupBarrier();
    }

    store(t0 + 4u * ct + 0u, r0 + 4u * cr + 0u, a0_0);
    store(t0 + 4u * ct + 1u, r0 + 4u * cr + 0u, a0_1);
    store(t0 + 4u * ct + 2u, r0 + 4u * cr + 0u, a0_2);
    store(t0 + 4u * ct + 3u, r0 + 4u * cr + 0u, a0_3);
    store(t0 + 4u * ct + 64u, r0 + 4u * cr + 0u, a0_4);
    store(t0 + 4u * ct + 65u, r0 + 4u * cr + 0u, a0_5);
    store(t0 + 4u * ct + 66u, r0 + 4u * cr + 0u, a0_6);
    store(t0 + 4u * ct + 67u, r0 + 4u * cr + 0u, a0_7);
    store(t0 + 4u * ct + 0u, r0 + 4u * cr + 64u, a1_0);
    store(t0 + 4u * ct + 1u, r0 + 4u * cr + 64u, a1_1);
    store(t0 + 4u * ct + 2u, r0 + 4u * cr + 64u, a1_2);
    store(t0 + 4u * ct + 3u, r0 + 4u * cr + 64u, a1_3);
    store(t0 + 4u * ct + 64u, r0 + 4u * cr + 64u, a1_4);
    store(t0 + 4u * ct + 65u, r0 + 4u * cr + 64u, a1_5);
    store(t0 + 4u * ct + 66u, r0 + 4u * cr + 64u, a1_6);
    store(t0 + 4u * ct + 67u, r0 + 4u * cr + 64u, a1_7);
}
