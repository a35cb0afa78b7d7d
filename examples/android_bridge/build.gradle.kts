// Versions: Android Gradle plugin 8.7, Kotlin 2.0, Chaquopy 17 (Python 3.12 on the device).
plugins {
    id("com.android.application") version "8.7.3" apply false
    id("org.jetbrains.kotlin.android") version "2.0.21" apply false
    id("com.chaquo.python") version "17.0.0" apply false
}
