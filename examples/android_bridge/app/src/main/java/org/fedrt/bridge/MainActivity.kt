package org.fedrt.bridge

import android.app.Activity
import android.os.Bundle
import android.widget.TextView
import com.chaquo.python.Python
import com.chaquo.python.android.AndroidPlatform

/** Schedules the federated session and shows what this device would decide right now. */
class MainActivity : Activity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        FedrtWorker.schedule(this)
        if (!Python.isStarted()) Python.start(AndroidPlatform(applicationContext))
        // The same provider and policy the SDK trains under, read from this phone.
        val decision = Python.getInstance().getModule("fedrt_app")
            .callAttr("describe_state", applicationContext).toString()
        setContentView(TextView(this).apply {
            setPadding(32, 32, 32, 32)
            text = "fedrt session scheduled (charging + unmetered + idle).\n\n$decision"
        })
    }
}
