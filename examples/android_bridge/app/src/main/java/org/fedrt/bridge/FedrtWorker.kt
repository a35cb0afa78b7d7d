package org.fedrt.bridge

import android.content.Context
import android.util.Log
import androidx.work.BackoffPolicy
import androidx.work.Constraints
import androidx.work.ExistingPeriodicWorkPolicy
import androidx.work.NetworkType
import androidx.work.PeriodicWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.Worker
import androidx.work.WorkerParameters
import androidx.work.workDataOf
import com.chaquo.python.PyException
import com.chaquo.python.Python
import com.chaquo.python.android.AndroidPlatform
import java.util.concurrent.TimeUnit

/**
 * One federated session: starts `fedrt.sdk.Device` (through app/src/main/python/fedrt_app.py)
 * and lets it check in, train in this window and upload, then stops it.
 *
 * WorkManager starts it only while the phone is charging, on an unmetered network and idle;
 * the SDK's own eligibility policy re-checks the same conditions (plus battery level and
 * thermal status) every few seconds while training, and pauses when they are lost.
 */
class FedrtWorker(context: Context, params: WorkerParameters) : Worker(context, params) {

    override fun doWork(): Result {
        val context = applicationContext
        if (!Python.isStarted()) Python.start(AndroidPlatform(context))
        return try {
            val summary = Python.getInstance().getModule("fedrt_app").callAttr(
                "run_session",
                context,
                context.filesDir.absolutePath,
                asset(context, ENROLLMENT_ASSET),
                asset(context, MANIFEST_ASSET),
                SESSION_SECONDS,
            ).toString()
            Log.i(TAG, "fedrt session: $summary")
            Result.success(workDataOf("summary" to summary))
        } catch (e: PyException) {
            Log.w(TAG, "fedrt session failed; WorkManager retries with backoff", e)
            Result.retry()
        }
    }

    /** Constraints lost (unplugged, metered, user back) or the window ran out. */
    override fun onStopped() {
        if (Python.isStarted()) Python.getInstance().getModule("fedrt_app").callAttr("request_stop")
    }

    companion object {
        private const val TAG = "fedrt"
        private const val WORK_NAME = "fedrt-federated-session"
        const val ENROLLMENT_ASSET = "fedrt/enrollment.json"
        const val MANIFEST_ASSET = "fedrt/manifest.json"

        // WorkManager stops a worker after 10 minutes; Google's federated-compute client ends
        // a training run within 9 min 45 s. Stay under both.
        private const val SESSION_SECONDS = 570.0

        fun asset(context: Context, name: String): String =
            context.assets.open(name).bufferedReader().use { it.readText() }

        /** Enqueue the periodic session once (KEEP: re-scheduling on every launch is a no-op). */
        fun schedule(context: Context) {
            val constraints = Constraints.Builder()
                .setRequiresCharging(true)
                .setRequiredNetworkType(NetworkType.UNMETERED)
                .setRequiresDeviceIdle(true)
                .setRequiresBatteryNotLow(true)
                .build()
            // 15 minutes is WorkManager's shortest period, and the federated-compute client's
            // retry interval; the coordinator's pace steering decides when to really come back.
            val request = PeriodicWorkRequestBuilder<FedrtWorker>(15, TimeUnit.MINUTES)
                .setConstraints(constraints)
                .setBackoffCriteria(BackoffPolicy.EXPONENTIAL, 15, TimeUnit.MINUTES)
                .build()
            WorkManager.getInstance(context).enqueueUniquePeriodicWork(
                WORK_NAME,
                ExistingPeriodicWorkPolicy.KEEP,
                request,
            )
        }
    }
}
