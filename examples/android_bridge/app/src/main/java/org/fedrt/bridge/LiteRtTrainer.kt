package org.fedrt.bridge

import org.tensorflow.lite.Interpreter
import java.io.File
import java.io.RandomAccessFile
import java.lang.reflect.Array as Arrays
import java.nio.Buffer
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.channels.FileChannel

/**
 * Runs a `fedrt export` model's signatures (train, evaluate, infer, read_weights, set_weights)
 * with LiteRT's [Interpreter.runSignature], for Python's `fedrt.sdk.android_trainer.JavaTrainer`.
 * `get_weights` takes no inputs and [Interpreter.runSignature] refuses an empty input map, so
 * weights are read with `read_weights`, its twin with one ignored input (`unused`, float[1]).
 *
 * The contract Python relies on (and which its tests check against a stand-in on the host):
 * map values are flat `FloatArray`/`IntArray`s in row-major order; an input of a static shape
 * holds exactly its elements; a dynamic (-1) dimension is taken from the array's length; each
 * output array is filled in place and is at least as long as the result. Arrays are wrapped
 * in `FloatBuffer`/`IntBuffer`s (no copy), so LiteRT copies each tensor once, in bulk.
 *
 * The model file is the one the SDK downloaded and verified (sha256 and the coordinator's
 * signature) into the app's private storage; it is memory-mapped read-only.
 */
class LiteRtTrainer @JvmOverloads constructor(modelPath: String, numThreads: Int = 1) :
    AutoCloseable {

    private val interpreter: Interpreter = RandomAccessFile(File(modelPath), "r").use { file ->
        val model = file.channel.map(FileChannel.MapMode.READ_ONLY, 0, file.length())
        Interpreter(model, Interpreter.Options().setNumThreads(numThreads))
    }

    val signatureKeys: kotlin.Array<String> get() = interpreter.signatureKeys

    /** [Interpreter.runSignature]'s shape over flat arrays (see the class comment). */
    @Synchronized
    fun runSignature(inputs: Map<String, Any>, outputs: Map<String, Any>, signatureKey: String) {
        // LiteRT would say only "Inputs should not be null or empty"; say what to run instead.
        require(inputs.isNotEmpty()) {
            "$signatureKey: runSignature needs at least one input; read weights with " +
                "read_weights (unused = float[1]), not get_weights"
        }
        val outBuffers = outputs.mapValues { (name, value) -> wrap(name, value) }
        val inValues = inputs.mapValues { (name, value) -> input(name, value, signatureKey) }
        interpreter.runSignature(inValues, outBuffers, signatureKey)
    }

    override fun close() = interpreter.close()

    private fun input(name: String, value: Any, signatureKey: String): Any {
        val shape = interpreter.getInputTensorFromSignature(name, signatureKey).shapeSignature()
        if (-1 !in shape) return wrap(name, value)
        // A Buffer never resizes an input; a nested array of the wanted shape does.
        val static = shape.filter { it != -1 }.fold(1) { a, b -> a * b }
        val dims = shape.map { if (it == -1) length(name, value) / static else it }.toIntArray()
        return nest(name, value, dims)
    }

    private companion object {
        fun wrap(name: String, value: Any): Buffer = when (value) {
            is FloatArray -> FloatBuffer.wrap(value)
            is IntArray -> IntBuffer.wrap(value)
            else -> throw IllegalArgumentException(
                "$name: expected a float[] or int[], got ${value.javaClass.name}",
            )
        }

        fun length(name: String, value: Any): Int = when (value) {
            is FloatArray -> value.size
            is IntArray -> value.size
            else -> throw IllegalArgumentException("$name: expected a float[] or int[]")
        }

        /** `value` (flat) as a nested primitive array of `dims`, row by row. */
        fun nest(name: String, value: Any, dims: IntArray): Any {
            val element = when (value) {
                is FloatArray -> java.lang.Float.TYPE
                is IntArray -> java.lang.Integer.TYPE
                else -> throw IllegalArgumentException("$name: expected a float[] or int[]")
            }
            require(dims.fold(1) { a, b -> a * b } == length(name, value)) {
                "$name: ${length(name, value)} values do not fill ${dims.contentToString()}"
            }
            val nested = Arrays.newInstance(element, *dims)
            val row = dims.last()
            var offset = 0
            fun fill(target: Any, depth: Int) {
                if (depth == dims.size - 1) {
                    System.arraycopy(value, offset, target, 0, row)
                    offset += row
                    return
                }
                for (i in 0 until dims[depth]) fill(Arrays.get(target, i), depth + 1)
            }
            fill(nested, 0)
            return nested
        }
    }
}
