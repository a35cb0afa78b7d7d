plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("com.chaquo.python")
}

android {
    namespace = "org.fedrt.bridge"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.fedrt.bridge"
        // Chaquopy 16+ needs API 24; WorkManager's device-idle constraint needs 23.
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // Phones, and the x86_64 emulator images.
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(
                getDefaultProguardFile("proguard-android-optimize.txt"),
                "proguard-rules.pro",
            )
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

// The fedrt wheel built from this checkout: `python -m build --wheel` at the repository root.
val fedrtWheel: String =
    fileTree("../../../dist") { include("fedrt-*-py3-none-any.whl") }
        .files.maxByOrNull { it.lastModified() }?.path
        ?: throw GradleException(
            "no fedrt wheel in dist/: run `python -m build --wheel` at the repository root",
        )

chaquopy {
    defaultConfig {
        version = "3.12"
        pip {
            // fedrt's base dependencies (numpy, cryptography) come from Chaquopy's package
            // repository; the model runs in Java LiteRT, so the `device` extra (ai-edge-litert,
            // which has no Android wheel) is left out on purpose.
            install(fedrtWheel)
            install("paho-mqtt>=2.1")
            install("flatbuffers>=24.3")
        }
    }
}

dependencies {
    // LiteRT's Interpreter API (org.tensorflow.lite.Interpreter), CPU.
    implementation("com.google.ai.edge.litert:litert:1.4.1")
    implementation("androidx.work:work-runtime-ktx:2.10.1")
}
